"""The local-LM job queue over Redis Streams: ``QueuedEngine`` (producer) puts jobs on
``mgw:jobs:<pool>``; ``workers.worker.Worker`` (consumer) runs them. See docs/distributed.md."""

from workers.queue.jobs import (
    DeadLetteredError,
    JobFailedError,
    NoLiveWorkerError,
    QueueTiming,
)
from workers.queue.producer import QueuedEngine
from workers.queue.registry import PoolDepth, all_pools, live_workers, pool_depth

__all__ = [
    "DeadLetteredError",
    "JobFailedError",
    "NoLiveWorkerError",
    "PoolDepth",
    "QueueTiming",
    "QueuedEngine",
    "all_pools",
    "live_workers",
    "pool_depth",
]
