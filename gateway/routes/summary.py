"""``/v1/admin/summary/...``, ``/v1/admin/bench-runs`` and ``/v1/admin/tasks``: the numbers
behind the dashboard, for admin keys. Summaries come from counters kept as tasks settle, so their
cost does not grow with the number of tasks stored."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from analysis.evaluate import BenchReport
from gateway.auth import AdminKey
from gateway.deps import ServicesDep
from protocols.result import ProtocolName
from service.schemas import ErrorEnvelope, TaskStatus
from service.store import TaskRecord
from service.summary import bench_run_view

router = APIRouter(prefix="/v1/admin", tags=["admin"])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope} for code in (401, 403, 404, 413, 422, 429)
}


class Overview(BaseModel):
    bucket: Literal["hour", "day"]
    series: list[dict[str, Any]] = Field(
        description="oldest first: start (epoch s), tasks, by_protocol, by_status, cost_usd, "
        "baseline_usd, local_tokens, remote_tokens"
    )
    totals: dict[str, Any] = Field(
        description="all time: tasks by status and protocol, cost_usd, baseline_usd (what "
        "remote-only would have cost), savings_factor, local and remote tokens"
    )
    latency: dict[str, Any] = Field(description="p50_s and p95_s over the series' window")
    queue: dict[str, int] = Field(description="tasks waiting, local jobs waiting, dead letters")


class AccuracySummary(BaseModel):
    tasks: list[dict[str, Any]] = Field(
        description="per protocol, from tasks with a reference answer: graded, exact-match rate "
        "with its 95% (Wilson) interval, mean F1, USD per task"
    )
    bench_runs: list[dict[str, Any]] = Field(description="published bench runs, newest first")
    frontier: list[dict[str, Any]] = Field(
        description="(cost per task, accuracy, 95% CI) points from tasks and bench runs; "
        "on_frontier marks the Pareto-optimal ones of each source"
    )


class InformationSummary(BaseModel):
    rows: list[dict[str, Any]] = Field(
        description="per protocol and local model: scored tasks, mean I(X;Z) in bits, bits per "
        "compression token"
    )
    points: list[dict[str, Any]] = Field(description="recent (mi_bits, f1) of graded tasks")


class BenchRunCreated(BaseModel):
    id: str
    created_at: float


class BenchRunList(BaseModel):
    data: list[dict[str, Any]]


class TaskRow(BaseModel):
    id: str
    status: TaskStatus
    protocol: ProtocolName
    key_id: str
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    latency_s: float | None = Field(description="created to finished")
    cost_usd: float | None = None
    baseline_usd: float | None = Field(description="what remote-only would have cost")


class TaskRows(BaseModel):
    data: list[TaskRow]
    next_cursor: str | None = None


@router.get("/summary/overview", response_model=Overview, responses=ERRORS)
async def overview(
    _: AdminKey, services: ServicesDep, bucket: Literal["hour", "day"] = "hour"
) -> dict[str, Any]:
    """Tasks per hour (last 48) or day (last 30) by protocol and status, spend against the
    remote-only counterfactual, tokens, p50/p95 latency, queue depth."""
    return await services.summary.overview(bucket)


@router.get("/summary/accuracy", response_model=AccuracySummary, responses=ERRORS)
async def accuracy(_: AdminKey, services: ServicesDep) -> dict[str, Any]:
    """Accuracy per protocol (graded tasks, bench runs) and the cost–accuracy frontier."""
    return await services.summary.accuracy()


@router.get("/summary/information", response_model=InformationSummary, responses=ERRORS)
async def information(_: AdminKey, services: ServicesDep) -> dict[str, Any]:
    """Mutual information per protocol and local model, and MI against accuracy."""
    return await services.summary.information()


@router.post("/bench-runs", status_code=201, response_model=BenchRunCreated, responses=ERRORS)
async def publish_bench_run(
    body: BenchReport, _: AdminKey, services: ServicesDep
) -> BenchRunCreated:
    """Store a ``minions-gw bench`` report (``bench --publish`` sends it here)."""
    record = await services.summary.publish_bench_run(body.model_dump(mode="json"))
    return BenchRunCreated(id=record["id"], created_at=record["created_at"])


@router.get("/bench-runs", response_model=BenchRunList, responses=ERRORS)
async def list_bench_runs(
    _: AdminKey, services: ServicesDep, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> BenchRunList:
    runs = await services.summary.bench_runs(limit)
    return BenchRunList(data=[bench_run_view(run) for run in runs])


@router.get("/bench-runs/{run_id}", response_model=dict[str, Any], responses=ERRORS)
async def get_bench_run(run_id: str, _: AdminKey, services: ServicesDep) -> dict[str, Any]:
    """A published report with its per-question outcomes."""
    return await services.summary.bench_run(run_id)


@router.get("/tasks", response_model=TaskRows, responses=ERRORS)
async def list_tasks(
    key: AdminKey,
    services: ServicesDep,
    status: TaskStatus | None = None,
    protocol: ProtocolName | None = None,
    key_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 25,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> TaskRows:
    """Every task (or one key's), newest first, filtered by status and protocol; one row each
    with its latency, spend and remote-only baseline."""
    found, next_cursor = await services.tasks.find(
        key, status=status, protocol=protocol, limit=limit, cursor=cursor, key_id=key_id
    )
    return TaskRows(data=[task_row(record) for record in found], next_cursor=next_cursor)


def task_row(record: TaskRecord) -> TaskRow:
    result = record.result or {}
    cost = (result.get("cost_usd") or {}).get("total")
    if cost is None and record.partial_usage:
        cost = record.partial_usage.get("cost_usd")
    baseline = result.get("baseline") or {}
    finished = record.finished_at
    return TaskRow.model_validate(
        {
            "id": record.id,
            "status": record.status,
            "protocol": record.protocol,
            "key_id": record.key_id,
            "created_at": record.created_at,
            "started_at": record.started_at,
            "finished_at": finished,
            "latency_s": finished - record.created_at if finished else None,
            "cost_usd": cost,
            "baseline_usd": baseline.get("usd"),
        }
    )
