"""Every Redis key the task service owns: task records and their queue, events and remote
checkpoints, documents, API keys, rate limits, usage, idempotency and MI reference contexts.

The workers' keys (job queue, worker registrations, studies) are in ``workers/keys.py``; both
share its ``mgw:`` prefix and name check.
"""

from __future__ import annotations

from workers.keys import PREFIX, check_name

__all__ = ["PREFIX", "check_name"]

MI_REFERENCE = f"{PREFIX}:mi:reference"  # list: recent task chunks (capped), MI reference contexts

# -- tasks ----------------------------------------------------------------------------

# The task queue: a stream of task ids (field ``task``) that runners read through the consumer
# group ``RUNNER_GROUP``; an entry is acknowledged and deleted when its task ends.
TASK_STREAM = f"{PREFIX}:tasks:queue"
RUNNER_GROUP = "runners"
# Every task id, and every task id of one API key: sorted sets with score 0, ordered by id
# (task ids start with their creation time, so lexical order is time order).
TASKS = f"{PREFIX}:tasks"
API_KEYS = f"{PREFIX}:keys"
BOOTSTRAPPED = f"{PREFIX}:meta:bootstrapped"


def task(task_id: str) -> str:
    """Hash: the task record."""
    return f"{PREFIX}:task:{task_id}"


def task_events(task_id: str) -> str:
    """Stream: the task's progress events, replayed to late SSE clients."""
    return f"{PREFIX}:task:{task_id}:events"


def tasks_of(key_id: str) -> str:
    return f"{PREFIX}:tasks:key:{key_id}"


def documents_of(key_id: str) -> str:
    """Sorted set: a key's stored documents, scored by their size in bytes (its storage
    quota); members whose document expired or was deleted are pruned when it is read."""
    return f"{PREFIX}:docs-of:{key_id}"


def document(document_id: str) -> str:
    """String: the document as JSON (name, pages, token count, owner); the id hashes owner and
    content, so one document is stored once."""
    return f"{PREFIX}:doc:{document_id}"


def idempotency(key_id: str, digest: str) -> str:
    """String: the task id an Idempotency-Key (hashed) of one API key created."""
    return f"{PREFIX}:idem:{key_id}:{digest}"


def api_key(key_id: str) -> str:
    """Hash: an API key's record: its SHA-256, name, flags, budget and spend (nano-USD)."""
    return f"{PREFIX}:key:{key_id}"


def rate(key_id: str, window: int) -> str:
    """Counter: requests of one key in one fixed one-minute window."""
    return f"{PREFIX}:rate:{key_id}:{window}"


def usage(by: str, value: str) -> str:
    """Hash: usage totals for one key, protocol or day."""
    return f"{PREFIX}:usage:{by}:{value}"


def usage_index(by: str) -> str:
    """Set: the values seen for one usage dimension (key ids, protocols, days)."""
    return f"{PREFIX}:usage-index:{by}"


def task_remote_calls(task_id: str) -> str:
    """Hash: a task's recorded remote replies (call key -> JSON), so a runner that restarts the
    task after its first runner died does not pay for them again."""
    return f"{PREFIX}:task:{task_id}:remote"


# -- the dashboard's summaries (service.store.summary, service.store.bench_runs) ---------------
SUMMARY_TOTALS = f"{PREFIX}:summary:total"  # hash: all-time counters of settled tasks
SUMMARY_MI = f"{PREFIX}:summary:mi"  # hash: "<[protocol, model]>|n|bits_micro|tokens_micro"
SUMMARY_MI_POINTS = f"{PREFIX}:summary:mi-points"  # list: recent (MI, F1) points, capped
BENCH_RUNS = f"{PREFIX}:bench-runs"  # zset: published bench run ids by publication time


def summary_bucket(bucket: str, start: int) -> str:
    """Hash: counters of the tasks that settled in one hour or day (``start``: epoch seconds);
    expires after the span the dashboard reads."""
    return f"{PREFIX}:summary:{bucket}:{start}"


def bench_run(run_id: str) -> str:
    """String: a published bench report (JSON), without its per-question outcomes."""
    return f"{PREFIX}:bench-run:{run_id}"


def bench_run_outcomes(run_id: str) -> str:
    """String: the per-question outcomes of a published bench report (JSON)."""
    return f"{PREFIX}:bench-run:{run_id}:outcomes"


def tasks_with_status(status: str) -> str:
    """Sorted set (score 0, by id): tasks that ended with ``status`` (set when they settle)."""
    return f"{PREFIX}:tasks:status:{status}"


def tasks_of_protocol(protocol: str) -> str:
    """Sorted set (score 0, by id): every task of one protocol (set when it is created)."""
    return f"{PREFIX}:tasks:protocol:{protocol}"


def tasks_of_protocol_status(protocol: str, status: str) -> str:
    """Sorted set (score 0, by id): tasks of one protocol that ended with ``status``."""
    return f"{PREFIX}:tasks:protocol:{protocol}:status:{status}"
