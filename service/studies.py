"""The study API behind ``/v1/studies``: queue a study, report on it, serve its figures.

A study is queued on the study stream (``workers.studies.store``) and run by a
``workers.studies.StudyConsumer``: on the workers (``minions-gw worker --studies``) when the
gateway sends local-model work to a pool (``MGW_LOCAL_POOL``), else by one consumer inside this
process, the same class and the same niced child process per study, so the embedded default
still runs them. Results and figures are read from Redis, so any gateway serves any study.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from analysis.studies import load_study, study_registry
from analysis.studies.base import DeviceName, PresetName, StudyParams
from service.errors import InvalidRequest, NotFound, QueueFull
from service.settings import Settings
from service.store import ApiKey
from workers.studies.consumer import StudyConsumer, StudyTiming
from workers.studies.figures import FIGURE_NAME
from workers.studies.store import StudyRecord, StudyStore, new_study_id

logger = logging.getLogger(__name__)


def _load_params(
    registry: Mapping[str, str],
    name: str,
    preset: PresetName,
    device: DeviceName,
    seed: int,
    check_cuda: bool,
) -> StudyParams:
    """Import the study and build its preset; with ``check_cuda`` fail on CUDA asked for but
    absent here (only when the study will run here: workers may have a GPU the gateway lacks)."""
    module = load_study(name, registry)
    params = module.Params.preset(preset, device=device, seed=seed)
    if device == "cuda" and check_cuda:
        import torch

        if not torch.cuda.is_available():
            raise InvalidRequest("device: no CUDA device is available here", param="device")
    return params


class StudyService:
    """Queues studies, reports on them, and runs them here when no worker pool does."""

    def __init__(
        self,
        redis: Any,
        data_dir: Path,
        *,
        max_queued: int = 16,
        threads: int = 1,
        extra_studies: Mapping[str, str] | None = None,
        run_here: bool = True,
        timing: StudyTiming | None = None,
    ) -> None:
        self.store = StudyStore(redis)
        self.registry = study_registry(extra_studies)
        self.max_queued = max_queued
        self.run_here = run_here
        self.consumer: StudyConsumer | None = (
            StudyConsumer(redis, data_dir, registry=self.registry, threads=threads, timing=timing)
            if run_here
            else None
        )
        self._running: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, redis: Any, settings: Settings) -> StudyService:
        return cls(
            redis,
            settings.data_dir,
            max_queued=settings.max_queued_studies,
            threads=settings.study_threads,
            extra_studies=settings.extra_studies,
            # With a local pool the workers run the studies (LM jobs first); else this process.
            run_here=settings.local_pool is None,
        )

    # -- the API ---------------------------------------------------------------------------

    async def submit(
        self, key: ApiKey, name: str, preset: PresetName, device: DeviceName, seed: int
    ) -> StudyRecord:
        if name not in self.registry:
            raise NotFound(
                f"name: no study {name!r}; choose one of {sorted(self.registry)}", param="name"
            )
        if await self.store.queued() >= self.max_queued:
            raise QueueFull(
                f"{self.max_queued} studies are already waiting; retry later", retry_after_s=60
            )
        params = await asyncio.to_thread(
            _load_params, self.registry, name, preset, device, seed, self.run_here
        )
        record = StudyRecord(
            id=new_study_id(),
            name=name,
            key_id=key.id,
            params=params.model_dump(mode="json", by_alias=True),
        )
        await self.store.enqueue(record)
        if self.consumer is not None:
            self.consumer.wake()
        logger.info("study %s (%s, %s) queued", record.id, name, preset)
        return record

    async def get(self, key: ApiKey, study_id: str) -> StudyRecord:
        record = await self.store.get(study_id)
        if record is None or not (key.admin or record.key_id == key.id):
            raise NotFound(f"no study {study_id!r}", param="id")
        return record

    async def recent(self, key: ApiKey, limit: int) -> list[StudyRecord]:
        """The newest studies the key may see (an admin key: all)."""
        records = await self.store.recent(limit)
        return [r for r in records if key.admin or r.key_id == key.id]

    def available(self) -> list[str]:
        return sorted(self.registry)

    async def figure(self, key: ApiKey, study_id: str, file: str) -> bytes:
        """A figure the study's result lists (PNG bytes, from Redis); anything else is 404."""
        record = await self.get(key, study_id)
        listed = (record.result or {}).get("figures", []) if record.status == "succeeded" else []
        data = None
        if FIGURE_NAME.fullmatch(file) and file in listed:
            data = await self.store.figure(study_id, file)
        if data is None:
            raise NotFound(f"no figure {file!r} in study {study_id!r}", param="file")
        return data

    # -- the in-process consumer -----------------------------------------------------------

    async def start(self) -> None:
        if self.consumer is not None and self._running is None:
            self._running = asyncio.create_task(self.consumer.run(), name="study-consumer")

    async def stop(self) -> None:
        """Stop the in-process consumer: a running study's child is terminated and the study
        goes back to the queue (it is never left ``running``)."""
        running, self._running = self._running, None
        if running is None or self.consumer is None:
            return
        self.consumer.stop()
        limit = self.consumer.timing.terminate_grace_s + 10
        done, _ = await asyncio.wait({running}, timeout=limit)
        if not done:  # Redis unreachable while settling: the entry stays pending for reclaim
            running.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await running
