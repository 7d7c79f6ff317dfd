"""``/v1/admin``: API keys, usage and queue workers. Admin keys only."""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter

from gateway.auth import AdminKey
from gateway.deps import ServicesDep
from service.errors import NotFound
from service.schemas import (
    ErrorEnvelope,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyView,
    PoolView,
    UsageReport,
    WorkersReport,
)
from service.store import ApiKey
from service.store.api_keys import NANO
from service.summary import savings_factor
from workers.queue import all_pools

router = APIRouter(prefix="/v1/admin", tags=["admin"])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope} for code in (401, 403, 404, 422, 429)
}


def key_view(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "admin": key.admin,
        "budget_usd": key.budget_usd,
        "spent_usd": key.spent_nano / NANO,
        "reserved_usd": key.reserved_nano / NANO,
        "rate_limit_per_minute": key.rate_limit_per_minute,
        "created_at": key.created_at,
    }


@router.post("/keys", status_code=201, response_model=KeyCreated, responses=ERRORS)
async def create_key(body: KeyCreate, _: AdminKey, services: ServicesDep) -> KeyCreated:
    """Create a key. The secret is in this response only; it is stored as a hash."""
    key, token = await services.store.api_keys.create(
        body.name,
        admin=body.admin,
        budget_usd=body.budget_usd,
        rate_limit_per_minute=body.rate_limit_per_minute or services.settings.rate_limit_per_minute,
    )
    return KeyCreated(**key_view(key), key=token)


@router.get("/keys", response_model=KeyList, responses=ERRORS)
async def list_keys(_: AdminKey, services: ServicesDep) -> KeyList:
    keys = await services.store.api_keys.list()
    return KeyList(data=[KeyView(**key_view(key)) for key in keys])


@router.delete("/keys/{key_id}", status_code=204, responses=ERRORS)
async def revoke_key(key_id: str, _: AdminKey, services: ServicesDep) -> None:
    if len(key_id) > 64 or not await services.store.api_keys.revoke(key_id):
        raise NotFound(f"no key {key_id!r}", param="key_id")


@router.get("/usage", response_model=UsageReport, responses=ERRORS)
async def usage(
    _: AdminKey, services: ServicesDep, by: Literal["key", "protocol", "day"] = "key"
) -> UsageReport:
    """Totals by key, protocol or day (UTC): tasks by status, tokens, cost, accuracy."""
    raw = await services.store.usage.report(by)
    data: dict[str, dict[str, float | None]] = {}
    hidden = ("cost_nano", "baseline_nano", "baseline_cost_nano")
    for value, counters in raw.items():
        row: dict[str, float | None] = {k: v for k, v in counters.items() if k not in hidden}
        row["cost_usd"] = counters["cost_nano"] / NANO
        # The remote-only counterfactual, summed as tasks settled (no scan): its USD, and how
        # many times less the tasks that have one spent.
        row["baseline_usd"] = counters["baseline_nano"] / NANO
        row["savings_factor"] = savings_factor(
            counters["baseline_nano"], counters["baseline_cost_nano"]
        )
        graded = counters["graded"]
        row.pop("f1_micro", None)
        row["mean_f1"] = counters["f1_micro"] / 1_000_000 / graded if graded else 0.0
        row["exact_match_rate"] = counters["exact_match"] / graded if graded else 0.0
        data[value] = row
    return UsageReport(by=by, data=data)


@router.get("/workers", response_model=WorkersReport, responses=ERRORS)
async def workers(_: AdminKey, services: ServicesDep) -> WorkersReport:
    """Local-model queue workers: every pool with its live workers and queue depth."""
    redis = services.store.redis
    local_pool = services.settings.local_pool
    now = time.time()
    pools = []
    for depth in await all_pools(redis):
        pool = depth.to_dict()
        for worker in pool["workers"]:
            beat = worker.get("heartbeat_at")
            worker["heartbeat_age_s"] = max(0.0, now - float(beat)) if beat else None
        pools.append(PoolView(**pool))
    if local_pool is not None and local_pool not in {pool.pool for pool in pools}:
        pools.append(
            PoolView(
                pool=local_pool, queued=0, held=0, waiting=0, dead_lettered=0, workers=[], stats={}
            )
        )
    return WorkersReport(
        local_pool=local_pool,
        tasks_waiting=await services.store.tasks.queue_depth(),
        pools=pools,
        studies_waiting=await services.studies.store.queued(),
        study_consumers=await services.studies.store.consumers(),
    )
