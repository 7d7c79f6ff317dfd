"""Per-key request limits in fixed one-minute windows, counted in Redis in leases.

A gateway process takes a lease of ``block`` request slots at a time (one ``INCRBY`` on the key's
window counter) and spends them locally, so most requests cost no Redis round trip. The limit is
never exceeded across any number of gateways: a lease holds only the slots still under the limit
when it was taken. The price is that slots leased by one gateway and not used by the window's end
are lost to the others, at most ``block - 1`` per gateway and window; ``block`` is 1 (exact, one
round trip per request) for limits under 40 a minute.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from service import keys
from service.store.multiplexed import MultiplexedConnection, register_script

MAX_BLOCK = 32

# Lease ARGV[1] slots from the window counter KEYS[1]; returns the counter after the lease.
_LEASE = """
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
if total == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], 120) end
return total
"""


def lease_block(limit_per_minute: int) -> int:
    """Slots per lease: 1 for small limits, up to ``MAX_BLOCK`` (about 1/20 of the limit)."""
    return max(1, min(MAX_BLOCK, limit_per_minute // 20))


@dataclass
class _Lease:
    window: int
    left: int
    exhausted: bool = False  # the window's counter passed the limit: refuse without asking


class RateLimiter:
    def __init__(
        self, redis: aioredis.Redis, multiplexed: MultiplexedConnection | None = None
    ) -> None:
        self._lease = register_script(redis, multiplexed, _LEASE)
        self._leases: dict[str, _Lease] = {}

    async def allow(self, key_id: str, limit_per_minute: int) -> bool:
        """Count one request for ``key_id`` in this minute; False when it is over the limit."""
        window = int(time.time() // 60)
        lease = self._leases.get(key_id)
        if lease is None or lease.window != window:
            lease = self._leases[key_id] = _Lease(window, 0)
            if len(self._leases) > 10_000:  # drop leases of past windows
                self._leases = {k: v for k, v in self._leases.items() if v.window == window}
                self._leases[key_id] = lease
        if lease.left == 0:
            if lease.exhausted:
                return False
            block = lease_block(limit_per_minute)
            total = int(await self._lease(keys=[keys.rate(key_id, window)], args=[block]))
            granted = max(0, min(block, limit_per_minute - (total - block)))
            lease.left += granted
            lease.exhausted = total >= limit_per_minute
            if lease.left == 0:
                return False
        lease.left -= 1
        return True

    def forget(self, key_id: str) -> None:
        self._leases.pop(key_id, None)
