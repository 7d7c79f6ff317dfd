"""Research studies as low-priority sidecar jobs of the gateway.

``POST /v1/studies/{name}`` records a study in Redis and queues its id; the ``StudySidecar``
(one asyncio task in the gateway process) pops ids one at a time and runs each study in a worker
thread with ``asyncio.to_thread(run_study, ...)``, with torch limited to ``study_threads`` CPU
threads so that it yields to the language-model work. Results (``result.json`` and the figures)
land in ``<data_dir>/studies/<id>/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request

from analysis.studies import STUDIES, load_study
from analysis.studies.base import DeviceName, PresetName, StudyParams, run_study
from gateway.errors import InvalidRequest, NotFound, QueueFull, ServiceUnavailable
from gateway.store import ApiKey
from gateway.store.studies import StudyRecord, StudyStore, new_study_id
from workers import keys

logger = logging.getLogger(__name__)

FIGURE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}\.png$")
_IDLE_POLL_S = 1.0


def _load_params(name: str, preset: PresetName, device: DeviceName, seed: int) -> StudyParams:
    """Import the study (torch) and build its preset; fail on CUDA asked for but absent."""
    module = load_study(name)
    params = module.Params.preset(preset, device=device, seed=seed)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InvalidRequest("device: no CUDA device is available here", param="device")
    return params


def _run_limited(name: str, params: StudyParams, out_dir: Path, threads: int, progress: Any) -> Any:
    """``run_study`` with torch held to ``threads`` intra-op threads (restored afterwards)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return run_study(name, params, out_dir, progress)
    finally:
        torch.set_num_threads(before)


class StudyService:
    """Queues studies, reports on them, and finds their figures on disk."""

    def __init__(
        self, redis: Any, data_dir: Path, *, max_queued: int = 16, threads: int = 1
    ) -> None:
        self.store = StudyStore(redis)
        self.root = data_dir / "studies"
        self.max_queued = max_queued
        self.threads = threads
        self.wake = asyncio.Event()
        self._sidecar: asyncio.Task[None] | None = None
        self._stopping = False

    # -- the API ---------------------------------------------------------------------------

    async def submit(
        self, key: ApiKey, name: str, preset: PresetName, device: DeviceName, seed: int
    ) -> StudyRecord:
        if name not in STUDIES:
            raise NotFound(
                f"name: no study {name!r}; choose one of {sorted(STUDIES)}", param="name"
            )
        if await self.store.queued() >= self.max_queued:
            raise QueueFull(
                f"{self.max_queued} studies are already waiting; retry later", retry_after_s=60
            )
        params = await asyncio.to_thread(_load_params, name, preset, device, seed)
        record = StudyRecord(
            id=new_study_id(),
            name=name,
            key_id=key.id,
            params=params.model_dump(mode="json", by_alias=True),
        )
        await self.store.enqueue(record)
        self.wake.set()
        logger.info("study %s (%s, %s) queued", record.id, name, preset)
        return record

    async def get(self, key: ApiKey, study_id: str) -> StudyRecord:
        record = await self.store.get(study_id)
        if record is None or not (key.admin or record.key_id == key.id):
            raise NotFound(f"no study {study_id!r}", param="id")
        return record

    def result(self, record: StudyRecord) -> dict[str, Any] | None:
        path = self.root / record.id / "result.json"
        if record.status != "succeeded" or not path.is_file():
            return None
        result: dict[str, Any] = json.loads(path.read_text())
        return result

    async def figure(self, key: ApiKey, study_id: str, file: str) -> Path:
        """The path of a figure the study's result lists; anything else is 404."""
        record = await self.get(key, study_id)
        result = await asyncio.to_thread(self.result, record)
        listed = result.get("figures", []) if result else []
        if not FIGURE_NAME.fullmatch(file) or file not in listed:
            raise NotFound(f"no figure {file!r} in study {study_id!r}", param="file")
        out_dir = (self.root / record.id).resolve()
        path = (out_dir / file).resolve()
        if path.parent != out_dir or not path.is_file():
            raise NotFound(f"no figure {file!r} in study {study_id!r}", param="file")
        return path

    # -- the sidecar -----------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self._sidecar = asyncio.create_task(self._loop(), name="study-sidecar")

    async def stop(self) -> None:
        """Stop taking studies. The loop is asked to end between Redis calls (cancelling one
        mid-command can wedge the shared connection pool); a study running in its thread
        finishes there but is not awaited (a thread cannot be cancelled), and its record stays
        ``running``."""
        task, self._sidecar = self._sidecar, None
        if task is None:
            return
        self._stopping = True
        self.wake.set()
        done, _ = await asyncio.wait({task}, timeout=_IDLE_POLL_S * 2)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                study_id = await self.store.pop()
            except Exception:
                logger.warning("study sidecar: Redis is not reachable", exc_info=True)
                study_id = None
            if self._stopping:
                if study_id is not None:  # put it back for the next start
                    await self.store.redis.lpush(keys.STUDY_QUEUE, study_id)
                return
            if study_id is None:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), _IDLE_POLL_S)
                continue
            await self.run_one(study_id)

    async def run_one(self, study_id: str) -> None:
        record = await self.store.get(study_id)
        if record is None or record.status != "queued":
            return
        loop = asyncio.get_running_loop()
        await self.store.update(study_id, status="running", started_at=time.time())

        last: dict[str, Any] = {}

        def progress(done: int, total: int, message: str = "") -> None:
            last.update(done=done, total=total, message=message[:200])
            asyncio.run_coroutine_threadsafe(self.store.update(study_id, progress=last), loop)

        out_dir = self.root / study_id
        try:
            module = await asyncio.to_thread(load_study, record.name)
            params = module.Params.model_validate(record.params)
            await asyncio.to_thread(
                _run_limited, record.name, params, out_dir, self.threads, progress
            )
        except Exception as exc:
            logger.exception("study %s (%s) failed", study_id, record.name)
            message = f"{type(exc).__name__}: {exc}"[:500]
            await self.store.update(
                study_id, status="failed", finished_at=time.time(), error=message
            )
            return
        # The last progress report again: the threadsafe updates may land in any order.
        await self.store.update(
            study_id, status="succeeded", finished_at=time.time(), progress=dict(last)
        )
        logger.info("study %s (%s) succeeded", study_id, record.name)


async def get_studies(request: Request) -> StudyService:
    studies: StudyService | None = getattr(request.app.state, "studies", None)
    if studies is None:
        raise ServiceUnavailable("studies are not available")
    return studies


StudiesDep = Annotated[StudyService, Depends(get_studies)]
