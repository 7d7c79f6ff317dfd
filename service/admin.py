"""The operator's view: API keys, usage totals and the queue workers (admin keys only; the
routes in ``gateway/routes/admin.py`` call this)."""

from __future__ import annotations

import time
from typing import Any, Literal

from service.errors import NotFound
from service.schemas import (
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyUpdate,
    KeyView,
    PoolView,
    UsageReport,
    WorkersReport,
)
from service.settings import Settings
from service.store import ApiKey, Store
from service.store.api_keys import NANO
from service.studies import StudyService
from service.summary import savings_factor
from workers.queue import all_pools


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
        "privacy": key.privacy,
    }


class AdminService:
    def __init__(self, store: Store, studies: StudyService, settings: Settings) -> None:
        self.store = store
        self.studies = studies
        self.settings = settings

    async def create_key(self, body: KeyCreate) -> KeyCreated:
        """A new key; its secret is in this answer only (it is stored as a hash)."""
        key, token = await self.store.api_keys.create(
            body.name,
            admin=body.admin,
            budget_usd=body.budget_usd,
            rate_limit_per_minute=body.rate_limit_per_minute or self.settings.rate_limit_per_minute,
            privacy=body.privacy,
        )
        return KeyCreated(**key_view(key), key=token)

    async def list_keys(self) -> KeyList:
        keys = await self.store.api_keys.list()
        return KeyList(data=[KeyView(**key_view(key)) for key in keys])

    async def update_key(self, key_id: str, body: KeyUpdate) -> KeyView:
        """Change a key's privacy default; its tasks already queued keep the mode they got."""
        key = (
            None
            if len(key_id) > 64
            else await self.store.api_keys.set_privacy(key_id, body.privacy)
        )
        if key is None:
            raise NotFound(f"no key {key_id!r}", param="key_id")
        return KeyView(**key_view(key))

    async def revoke_key(self, key_id: str) -> None:
        if len(key_id) > 64 or not await self.store.api_keys.revoke(key_id):
            raise NotFound(f"no key {key_id!r}", param="key_id")

    async def usage(self, by: Literal["key", "protocol", "day"]) -> UsageReport:
        """Totals by key, protocol or day (UTC): tasks by status, tokens, cost, accuracy."""
        raw = await self.store.usage.report(by)
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

    async def workers(self) -> WorkersReport:
        """Local-model queue workers: every pool with its live workers and queue depth."""
        redis = self.store.redis
        local_pool = self.settings.local_pool
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
                    pool=local_pool,
                    queued=0,
                    held=0,
                    waiting=0,
                    dead_lettered=0,
                    workers=[],
                    stats={},
                )
            )
        return WorkersReport(
            local_pool=local_pool,
            tasks_waiting=await self.store.tasks.queue_depth(),
            pools=pools,
            studies_waiting=await self.studies.store.queued(),
            study_consumers=await self.studies.store.consumers(),
        )
