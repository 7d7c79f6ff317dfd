"""Every Redis key (and consumer-group name) the workers own: the local-LM job queue, worker
registrations and the study queue. The task service's keys are in ``service/keys.py``.

All keys of the project share the ``mgw:`` prefix, so one ``SCAN mgw:*`` finds everything. Pool
names and job ids are checked here, once, so a name can never break the key layout.

=================================  ======  ==================================================
key                                type    what
=================================  ======  ==================================================
``mgw:jobs:<pool>``                stream  the pool's jobs; consumer group ``JOB_GROUP``
``mgw:jobs:<pool>:dead``           stream  dead-lettered jobs (capped, newest kept)
``mgw:jobs:<pool>:stats``          hash    counters: enqueued, completed, failed, retried,
                                           reclaimed, dead_lettered, reused
``mgw:reply:<task>:<call>``        stream  one ``QueuedEngine`` call's outcomes (it blocks on
                                           it); an entry's fields are job id -> outcome
``mgw:results:<task>``             hash    job id -> outcome (JSON) of a task's jobs, with a
                                           TTL; rewriting a field is idempotent, so a duplicate
                                           execution is harmless
``mgw:job:<job_id>:error``         string  the last retryable error of a job, for dead letters
``mgw:worker:<name>``              hash    a worker's registration; its TTL is the heartbeat
``mgw:pool:<pool>:workers``        set     names of workers that registered for the pool
``mgw:pools``                      set     every pool a worker ever registered for
=================================  ======  ==================================================
"""

from __future__ import annotations

import re

PREFIX = "mgw"

# The consumer group every worker of a pool reads ``job_stream(pool)`` through.
JOB_GROUP = "workers"

POOLS = f"{PREFIX}:pools"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,199}$")


def check_name(kind: str, value: str) -> str:
    """``value`` if it is a safe key component (letters, digits, ``_.@-``), else ValueError."""
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"{kind}: {value!r} is not a valid name (1-200 letters, digits, '_', '.', '@' or '-', "
            "starting with a letter or digit)"
        )
    return value


def job_stream(pool: str) -> str:
    return f"{PREFIX}:jobs:{check_name('pool', pool)}"


def dead_letter_stream(pool: str) -> str:
    return f"{job_stream(pool)}:dead"


def pool_stats(pool: str) -> str:
    return f"{job_stream(pool)}:stats"


def reply_stream(task_id: str, call_id: str) -> str:
    return f"{PREFIX}:reply:{check_name('task_id', task_id)}:{check_name('call_id', call_id)}"


def job_results(task_id: str) -> str:
    return f"{PREFIX}:results:{check_name('task_id', task_id)}"


def job_error(job_id: str) -> str:
    return f"{PREFIX}:job:{check_name('job_id', job_id)}:error"


def worker(name: str) -> str:
    return f"{PREFIX}:worker:{check_name('worker', name)}"


def pool_workers(pool: str) -> str:
    return f"{PREFIX}:pool:{check_name('pool', pool)}:workers"


# -- the research sidecar ------------------------------------------------------------------
STUDIES = f"{PREFIX}:studies"  # zset: every study id (ids sort by creation time)
# Stream of study ids waiting to run (field ``study``), read through the consumer group
# ``STUDY_GROUP`` by the workers (``minions-gw worker --studies``) or, with no local pool, by
# the gateway itself; an entry is acknowledged and deleted when its study ends.
STUDY_STREAM = f"{PREFIX}:studies:jobs"
STUDY_GROUP = "study-runners"


def study(study_id: str) -> str:
    """Hash: one study's record (name, params, status, progress, error)."""
    return f"{PREFIX}:study:{check_name('study_id', study_id)}"


def study_figures(study_id: str) -> str:
    """Hash: a finished study's figures, file name -> PNG bytes (base64), served by any gateway."""
    return f"{PREFIX}:study:{check_name('study_id', study_id)}:figures"
