"""The engines a gateway serves with: the local one, the default remote, and the other remote
models an operator allowed (``MGW_REMOTE_MODELS``), built on first use."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import redis.asyncio as aioredis

from engines.base import Engine
from engines.factory import create_engine
from service.engines import EngineSet
from service.errors import InvalidRequest
from service.settings import Settings
from workers.queue import NoLiveWorkerError, QueuedEngine, QueueTiming, live_workers
from workers.queue.producer import no_worker_message
from workers.queue.registry import wait_for_live_worker


@dataclass(frozen=True, slots=True)
class RemoteChoice:
    engine: Engine
    stand_in: bool  # the local model answers as the remote: counted, never priced


class EnginePool:
    def __init__(
        self,
        engines: EngineSet,
        settings: Settings,
        *,
        extra_remotes: dict[str, Engine] | None = None,
        owns_engines: bool = True,
    ) -> None:
        self.engines = engines
        self.settings = settings
        self._remotes: dict[str, Engine] = dict(extra_remotes or {})
        self._built: list[Engine] = []
        self._owns = owns_engines

    @property
    def local(self) -> Engine:
        return self.engines.local

    @property
    def stand_in(self) -> bool:
        return self.engines.remote_stand_in

    def local_for(self, redis: aioredis.Redis, task_id: str | None) -> Engine:
        """The local engine one task runs with: the in-process one, or (``MGW_LOCAL_POOL``) a
        ``QueuedEngine`` on that pool, counting tokens with the local tokenizer. Its job ids
        derive from ``task_id``, so a restarted task reuses the local results already recorded."""
        pool = self.settings.local_pool
        if pool is None:
            return self.local
        local = self.local
        return QueuedEngine(
            redis,
            pool=pool,
            task_id=task_id,
            model=local.model,
            context_window=local.context_window,
            token_counter=local.count_tokens,
            timing=QueueTiming(pool_wait_s=self.settings.pool_wait_s),
        )

    async def wait_for_workers(self, redis: aioredis.Redis) -> None:
        """With ``MGW_LOCAL_POOL``: wait up to ``MGW_POOL_WAIT_S`` for the pool's first live
        worker (a task submitted while the workers still load their model waits for them), then
        fail with ``NoLiveWorkerError``."""
        pool, wait_s = self.settings.local_pool, self.settings.pool_wait_s
        if pool is not None and not await wait_for_live_worker(redis, pool, wait_s):
            raise NoLiveWorkerError(no_worker_message(pool, wait_s))

    async def live_workers(self, redis: aioredis.Redis) -> dict[str, int]:
        """Live workers of each configured pool (for ``/ready``); empty without a pool."""
        pool = self.settings.local_pool
        return {} if pool is None else {pool: len(await live_workers(redis, pool))}

    def remote_models(self) -> list[str]:
        """The remote models a task may name (the default one first)."""
        names = [self.engines.remote.model]
        if not self.stand_in:
            names += [m for m in [*self.settings.remote_models, *self._remotes] if m not in names]
        return names

    def remote(self, model: str | None) -> RemoteChoice:
        """The remote for ``model`` (None: the default), and whether the local model stands in
        for it: the one place that decides, for admission, budgets and execution alike."""
        engine = self.remote_for(model)
        return RemoteChoice(engine, stand_in=self.stand_in and engine is self.engines.remote)

    def remote_for(self, model: str | None) -> Engine:
        """The remote engine for ``model`` (None: the default). Raises ``InvalidRequest`` for a
        model the operator did not allow."""
        default = self.engines.remote
        if model is None or model == default.model:
            return default
        if self.stand_in:
            raise InvalidRequest(
                f"remote_model: no remote is configured, so {model!r} cannot be used (the local "
                "model stands in for the remote)",
                param="options.remote_model",
            )
        if model in self._remotes:
            return self._remotes[model]
        if model not in self.settings.remote_models:
            allowed = ", ".join(self.remote_models())
            raise InvalidRequest(
                f"remote_model: {model!r} is not allowed here; choose one of {allowed}",
                param="options.remote_model",
            )
        spec = self.settings.remote_engine_spec()
        assert spec is not None  # a configured remote is not a stand-in
        engine = create_engine(dataclasses.replace(spec, model=model))
        self._remotes[model] = engine
        self._built.append(engine)
        return engine

    async def aclose(self) -> None:
        for engine in self._built:
            await engine.aclose()
        if self._owns:
            await self.engines.aclose()
