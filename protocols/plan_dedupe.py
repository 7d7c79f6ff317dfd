"""Plans without waste: tasks that ask the same thing run once per chunk.

A remote (the 135M stand-in above all) often writes the same task several times ("read the whole
document" seven times over every chunk: seven identical jobs per chunk). Before any job runs, tasks
whose texts are the same or nearly so are merged: one task over the union of the chunks they
selected (each selection resolved to chunk ids first, so "all", ids and keywords merge alike).
"""

from __future__ import annotations

from protocols.findings import near_duplicates
from protocols.plans import JobPlan, PlannedTask

_MAX_ADVICE_CHARS = 1000


def merge_duplicate_tasks(
    plan: JobPlan, selected: list[list[int]]
) -> tuple[JobPlan, list[list[int]], int]:
    """The plan with near-duplicate tasks merged, each task's chunk ids (the union of its
    duplicates', in first-seen order), and how many tasks were merged away."""
    tasks: list[PlannedTask] = []
    chunk_ids: list[list[int]] = []
    for planned, ids in zip(plan.tasks, selected, strict=True):
        twin = next(
            (i for i, kept in enumerate(tasks) if near_duplicates(kept.task, planned.task)), None
        )
        if twin is None:
            tasks.append(planned)
            chunk_ids.append(list(ids))
            continue
        kept = tasks[twin]
        advice = kept.advice
        if planned.advice.strip() and planned.advice.strip() not in advice:
            advice = f"{advice} / {planned.advice}" if advice.strip() else planned.advice
        tasks[twin] = kept.model_copy(update={"advice": advice[:_MAX_ADVICE_CHARS]})
        chunk_ids[twin] = list(dict.fromkeys([*chunk_ids[twin], *ids]))
    merged = len(plan.tasks) - len(tasks)
    return (plan if not merged else JobPlan(tasks=tasks)), chunk_ids, merged
