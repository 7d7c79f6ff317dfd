"""API keys (stored only as SHA-256 hashes, verified keys cached for a moment), budgets (reserve
and settle atomically in Lua) and per-key rate limits (``service.store.rate_limits``)."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis

from service import keys
from service.store.multiplexed import MultiplexedConnection
from service.store.rate_limits import RateLimiter

NANO = 1_000_000_000  # budgets and spend are integers of nano-USD: no float drift in Redis
BOOTSTRAP_ID = "bootstrap"
TOKEN_PREFIX = "mgw_"

# Reserve ARGV[1] nano-USD on KEYS[1] unless spent + reserved + amount would pass the budget.
# Returns {1, available} when reserved, {0, available} when refused, {-1, 0} for an unknown key.
_RESERVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
local amount = tonumber(ARGV[1])
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent_nano') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved_nano') or '0')
local budget = redis.call('HGET', KEYS[1], 'budget_nano')
if budget and budget ~= '' then
  local available = tonumber(budget) - spent - reserved
  if amount > available then return {0, available} end
  redis.call('HINCRBY', KEYS[1], 'reserved_nano', amount)
  return {1, available - amount}
end
redis.call('HINCRBY', KEYS[1], 'reserved_nano', amount)
return {1, -1}
"""

# Release ARGV[1] nano-USD of reservation and add ARGV[2] to the spend (a revoked key: nothing).
# Sets one field of a key that exists; a key revoked meanwhile is not brought back as a stub.
_SET_FIELD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
_SETTLE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'reserved_nano', -tonumber(ARGV[1]))
redis.call('HINCRBY', KEYS[1], 'spent_nano', tonumber(ARGV[2]))
return 1
"""


def to_nano(usd: float) -> int:
    """USD to nano-USD, rounded up: a reservation or a charge is never rounded in our favour."""
    return max(0, math.ceil(usd * NANO - 1e-6))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def key_id_of(token: str) -> str:
    """The key id a bearer token names: ``mgw_<id>_<secret>``, or the bootstrap admin key."""
    if token.startswith(TOKEN_PREFIX):
        parts = token.split("_", 2)
        if len(parts) == 3 and parts[1]:
            return parts[1]
    return BOOTSTRAP_ID


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    admin: bool
    budget_nano: int | None
    rate_limit_per_minute: int
    created_at: float
    spent_nano: int = 0
    reserved_nano: int = 0
    privacy: str | None = None  # the key's privacy default (set by an admin); None: the gateway's

    @property
    def budget_usd(self) -> float | None:
        return None if self.budget_nano is None else self.budget_nano / NANO

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> ApiKey:
        budget = data.get("budget_nano", "")
        return cls(
            id=data["id"],
            name=data.get("name", ""),
            admin=data.get("admin") == "1",
            budget_nano=int(budget) if budget else None,
            rate_limit_per_minute=int(data.get("rate_limit", "60")),
            created_at=float(data.get("created_at", "0")),
            spent_nano=int(data.get("spent_nano", "0")),
            reserved_nano=int(data.get("reserved_nano", "0")),
            privacy=data.get("privacy") or None,
        )


@dataclass(frozen=True, slots=True)
class Reservation:
    granted: bool
    available_nano: int | None  # what the budget has left; None without a budget


class ApiKeyStore:
    def __init__(
        self, redis: aioredis.Redis, multiplexed: MultiplexedConnection | None = None
    ) -> None:
        self.redis = redis
        self._reserve = redis.register_script(_RESERVE)
        self.rate_limits = RateLimiter(redis, multiplexed)
        # Verified keys by token hash: (monotonic expiry, key). A revocation here clears it at
        # once; one in another process takes effect within the cache's time to live.
        self._verified: dict[str, tuple[float, ApiKey]] = {}
        self._settle = redis.register_script(_SETTLE)
        self._set_field = redis.register_script(_SET_FIELD)

    async def create(
        self,
        name: str,
        *,
        admin: bool = False,
        budget_usd: float | None = None,
        rate_limit_per_minute: int = 600,
        token: str | None = None,
        key_id: str | None = None,
        privacy: str | None = None,
    ) -> tuple[ApiKey, str]:
        """Store a new key; returns its record and the plaintext token (shown once, never kept)."""
        key_id = key_id or secrets.token_hex(6)
        token = token or f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(
            id=key_id,
            name=name,
            admin=admin,
            budget_nano=None if budget_usd is None else to_nano(budget_usd),
            rate_limit_per_minute=rate_limit_per_minute,
            created_at=time.time(),
            privacy=privacy,
        )
        fields: dict[Any, Any] = {
            "id": record.id,
            "name": record.name,
            "admin": "1" if admin else "0",
            "budget_nano": "" if record.budget_nano is None else str(record.budget_nano),
            "rate_limit": str(rate_limit_per_minute),
            "created_at": repr(record.created_at),
            "hash": hash_token(token),
            "privacy": privacy or "",
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.api_key(key_id), mapping=fields)
            pipe.sadd(keys.API_KEYS, key_id)
            await pipe.execute()
        return record, token

    async def ensure_bootstrap(
        self, admin_token: str | None, rate_limit_per_minute: int
    ) -> str | None:
        """The bootstrap admin key: the configured one (re-hashed at every start, so rotating
        ``MGW_ADMIN_KEY`` works), or on the very first start a generated one, returned once."""
        if admin_token is not None:
            exists = await self.redis.exists(keys.api_key(BOOTSTRAP_ID))
            if exists:
                await self.redis.hset(keys.api_key(BOOTSTRAP_ID), "hash", hash_token(admin_token))
            else:
                await self.create(
                    "bootstrap admin",
                    admin=True,
                    rate_limit_per_minute=rate_limit_per_minute,
                    token=admin_token,
                    key_id=BOOTSTRAP_ID,
                )
            await self.redis.set(keys.BOOTSTRAPPED, "1")
            return None
        if not await self.redis.set(keys.BOOTSTRAPPED, "1", nx=True):
            return None
        _, token = await self.create(
            "bootstrap admin", admin=True, rate_limit_per_minute=rate_limit_per_minute
        )
        return token

    async def authenticate(self, token: str, cache_ttl_s: float = 0.0) -> ApiKey | None:
        """The key a token belongs to (hashes compared in constant time), or None. With a
        ``cache_ttl_s``, a key verified less than that long ago is not looked up again."""
        digest = hash_token(token)
        now = time.monotonic()
        cached = self._verified.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        data = cast("dict[str, str]", await self.redis.hgetall(keys.api_key(key_id_of(token))))
        stored = data.get("hash", "")
        # Always compare, also for unknown ids, so timing says nothing about which ids exist.
        valid = hmac.compare_digest(stored or "0" * 64, digest) and bool(stored)
        if not valid:
            self._verified.pop(digest, None)
            return None
        key = ApiKey.from_hash(data)
        if cache_ttl_s > 0:
            if len(self._verified) > 10_000:
                self._verified = {d: e for d, e in self._verified.items() if e[0] > now}
            self._verified[digest] = (now + cache_ttl_s, key)
        return key

    async def get(self, key_id: str) -> ApiKey | None:
        data = cast("dict[str, str]", await self.redis.hgetall(keys.api_key(key_id)))
        return ApiKey.from_hash(data) if data else None

    async def list(self) -> list[ApiKey]:
        ids = sorted(cast("set[str]", await self.redis.smembers(keys.API_KEYS)))
        async with self.redis.pipeline(transaction=False) as pipe:
            for key_id in ids:
                pipe.hgetall(keys.api_key(key_id))
            rows = await pipe.execute()
        return [ApiKey.from_hash(row) for row in rows if row]

    async def set_privacy(self, key_id: str, privacy: str | None) -> ApiKey | None:
        """Change a key's privacy default (None: the gateway's); None when there is no such key.
        Other gateway processes see it once their verified-key cache lapses (its time to live)."""
        changed = await self._set_field(
            keys=[keys.api_key(key_id)], args=["privacy", privacy or ""]
        )
        if not changed:
            return None
        self._verified = {d: e for d, e in self._verified.items() if e[1].id != key_id}
        return await self.get(key_id)

    async def revoke(self, key_id: str) -> bool:
        self._verified = {d: e for d, e in self._verified.items() if e[1].id != key_id}
        self.rate_limits.forget(key_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.api_key(key_id))
            pipe.srem(keys.API_KEYS, key_id)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    async def count(self) -> int:
        return int(await self.redis.scard(keys.API_KEYS))

    # -- budgets ----------------------------------------------------------------------------
    async def reserve(self, key_id: str, amount_nano: int) -> Reservation:
        if amount_nano <= 0:
            return Reservation(granted=True, available_nano=None)
        granted, available = await self._reserve(keys=[keys.api_key(key_id)], args=[amount_nano])
        if int(granted) == -1:
            return Reservation(granted=False, available_nano=0)
        return Reservation(
            granted=int(granted) == 1, available_nano=None if int(available) < 0 else int(available)
        )

    async def settle(self, key_id: str, release_nano: int, spent_nano: int) -> None:
        if release_nano or spent_nano:
            await self._settle(keys=[keys.api_key(key_id)], args=[release_nano, spent_nano])

    async def queue_settle(
        self, pipe: Any, key_id: str, release_nano: int, spent_nano: int
    ) -> None:
        """Add a settle to a pipeline (scripts run inside MULTI like any command; awaiting only
        queues it)."""
        if release_nano or spent_nano:
            await self._settle(
                keys=[keys.api_key(key_id)], args=[release_nano, spent_nano], client=pipe
            )
