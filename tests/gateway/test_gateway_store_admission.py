"""The store's hot path: verified-key cache, leased rate limits, and the one-script admission of
a task (backpressure, budget reservation and the write), against a real Redis."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from protocols.task import Document
from service import keys
from service.store import Store, TaskRecord, new_task_id
from service.store.api_keys import ApiKeyStore
from service.store.documents import StoredDocument
from service.store.rate_limits import RateLimiter, lease_block


def _record(key_id: str, reserved_nano: int = 0) -> TaskRecord:
    return TaskRecord(
        id=new_task_id(),
        key_id=key_id,
        protocol="minions",
        status="queued",
        created_at=time.time(),
        request={"question": "q?", "document_ids": [], "options": {}},
        reserved_nano=reserved_nano,
    )


async def test_leased_rate_limit_is_exact_across_gateways(store: Store) -> None:
    # Two limiters over one Redis stand for two gateway processes.
    limit = 200
    assert lease_block(limit) == 10
    first, second = RateLimiter(store.redis), RateLimiter(store.redis)
    allowed = 0
    for n in range(300):
        limiter = first if n % 3 else second
        allowed += await limiter.allow("k1", limit)
    # Leases never hand out a slot over the limit; at most block - 1 slots per gateway go unused.
    assert limit - 2 * (lease_block(limit) - 1) <= allowed <= limit
    alone = RateLimiter(store.redis)
    assert sum([await alone.allow("k2", limit) for _ in range(250)]) == limit
    # Small limits lease one slot at a time: exact.
    small = RateLimiter(store.redis)
    assert [await small.allow("k3", 3) for _ in range(5)] == [True] * 3 + [False] * 2


async def test_concurrent_requests_never_pass_the_limit(store: Store) -> None:
    limiter = RateLimiter(store.redis)
    # Fixed one-minute windows: start well inside one, so all 180 fall into the same window
    # even on a loaded machine (across a boundary, each window may rightly allow 100).
    into_minute = time.time() % 60
    if into_minute > 45:
        await asyncio.sleep(60.5 - into_minute)
    results = await asyncio.gather(*(limiter.allow("k", 100) for _ in range(180)))
    assert sum(results) == 100


async def test_verified_key_cache_and_revocation(store: Store) -> None:
    key, token = await store.api_keys.create("app")
    other_process = ApiKeyStore(store.redis)
    assert (await store.api_keys.authenticate(token, cache_ttl_s=30)) == key
    assert await store.api_keys.authenticate(token + "x", cache_ttl_s=30) is None
    # Revoked elsewhere: this process trusts its cached key until the TTL ...
    assert await other_process.revoke(key.id)
    assert await store.api_keys.authenticate(token, cache_ttl_s=30) == key
    # ... and without the cache (TTL 0) sees it at once.
    assert await ApiKeyStore(store.redis).authenticate(token, cache_ttl_s=0) is None
    # Revoking through this process clears its cache immediately.
    key2, token2 = await store.api_keys.create("app2")
    assert await store.api_keys.authenticate(token2, cache_ttl_s=30) == key2
    await store.api_keys.revoke(key2.id)
    assert await store.api_keys.authenticate(token2, cache_ttl_s=30) is None


async def test_cached_key_expires(store: Store) -> None:
    key, token = await store.api_keys.create("app")
    assert await store.api_keys.authenticate(token, cache_ttl_s=0.2) == key
    await ApiKeyStore(store.redis).revoke(key.id)
    await asyncio.sleep(0.3)
    assert await store.api_keys.authenticate(token, cache_ttl_s=0.2) is None


async def _written(redis: Redis, record: TaskRecord, document: StoredDocument) -> list[int]:
    return [
        int(await redis.exists(keys.task(record.id))),
        int(await redis.exists(keys.document(document.id))),
        int(await redis.xlen(keys.TASK_STREAM)),
    ]


async def test_admission_refusals_write_nothing(store: Store) -> None:
    key, _ = await store.api_keys.create("app", budget_usd=1.0)
    document = StoredDocument.new(key.id, Document(text="some text"), tokens=2)

    over_budget = _record(key.id, reserved_nano=2_000_000_000)
    admission = await store.tasks.create(over_budget, enqueue=True, documents=[document])
    assert (admission.outcome, admission.available_nano) == ("budget", 1_000_000_000)
    assert await _written(store.redis, over_budget, document) == [0, 0, 0]
    assert (await store.api_keys.get(key.id)).reserved_nano == 0  # type: ignore[union-attr]

    fits = _record(key.id, reserved_nano=600_000_000)
    admission = await store.tasks.create(fits, enqueue=True, documents=[document], max_waiting=1)
    assert (admission.outcome, admission.available_nano) == ("created", 400_000_000)
    assert await _written(store.redis, fits, document) == [1, 1, 1]

    queue_full = _record(key.id, reserved_nano=100_000_000)
    admission = await store.tasks.create(queue_full, enqueue=True, max_waiting=1)
    assert (admission.outcome, admission.waiting) == ("queue_full", 1)
    assert not await store.redis.exists(keys.task(queue_full.id))
    assert (await store.api_keys.get(key.id)).reserved_nano == 600_000_000  # type: ignore[union-attr]


async def test_admission_of_unbudgeted_key_and_revoked_key(store: Store) -> None:
    key, _ = await store.api_keys.create("free")
    admission = await store.tasks.create(_record(key.id, reserved_nano=5), enqueue=False)
    assert (admission.outcome, admission.available_nano) == ("created", None)
    assert (await store.api_keys.get(key.id)).reserved_nano == 5  # type: ignore[union-attr]
    await store.api_keys.revoke(key.id)
    refused = await store.tasks.create(_record(key.id, reserved_nano=5), enqueue=False)
    assert refused.outcome == "budget"
