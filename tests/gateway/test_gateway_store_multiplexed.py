"""The multiplexed Redis connection of the submit path: concurrent commands on one connection get
their own replies, errors stay with their command, a lost or silent connection fails what waits
and is replaced, a flushed script cache is reloaded, and it runs under uvloop (uvicorn's loop)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import uvloop
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.store import Store
from service.store.connection import BlockingSentinelConnectionPool, client_for
from service.store.multiplexed import MultiplexedConnection, register_script

PREFIX = "mgw:test:multiplexed"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    the_client = client_for(redis_url)
    await the_client.flushdb()
    yield the_client
    await the_client.flushdb()
    await the_client.aclose()


@pytest.fixture
async def connection(client: aioredis.Redis) -> AsyncIterator[MultiplexedConnection]:
    multiplexed = MultiplexedConnection.for_client(client)
    assert multiplexed is not None
    yield multiplexed
    await multiplexed.aclose()


async def test_concurrent_commands_each_get_their_own_reply(
    connection: MultiplexedConnection, client: aioredis.Redis
) -> None:
    async def one(index: int) -> None:
        assert await connection.execute("SET", f"{PREFIX}:{index}", f"value-{index}") == "OK"
        assert await connection.execute("GET", f"{PREFIX}:{index}") == f"value-{index}"
        assert await connection.execute("INCRBY", f"{PREFIX}:counter", index) >= index

    await asyncio.gather(*(one(index) for index in range(300)))
    assert await client.get(f"{PREFIX}:counter") == str(sum(range(300)))
    assert await client.get(f"{PREFIX}:299") == "value-299"
    # Only this test's database: other processes may share the server.
    db = str(client.connection_pool.connection_kwargs.get("db", 0))
    clients = [c for c in await client.client_list() if str(c.get("db")) == db]
    assert len(clients) <= 3, clients  # the pool's few connections and the one multiplexed


async def test_an_error_reply_fails_only_its_own_command(
    connection: MultiplexedConnection, client: aioredis.Redis
) -> None:
    await client.set(f"{PREFIX}:text", "not a number")
    results = await asyncio.gather(
        connection.execute("INCR", f"{PREFIX}:number"),
        connection.execute("INCR", f"{PREFIX}:text"),
        connection.execute("INCR", f"{PREFIX}:number"),
        return_exceptions=True,
    )
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], ResponseError) and "not an integer" in str(results[1])
    assert await connection.execute("PING") == "PONG"


async def test_it_uses_the_database_and_decoding_of_its_client(client: aioredis.Redis) -> None:
    pool = client.connection_pool
    other_db = (int(pool.connection_kwargs.get("db", 0) or 0) + 1) % 16
    other = aioredis.Redis(
        connection_pool=aioredis.ConnectionPool(
            connection_class=pool.connection_class, **{**pool.connection_kwargs, "db": other_db}
        )
    )
    multiplexed = MultiplexedConnection.for_client(other)
    assert multiplexed is not None
    try:
        await multiplexed.execute("SET", f"{PREFIX}:db", "here")
        assert await other.get(f"{PREFIX}:db") == "here"
        assert await client.get(f"{PREFIX}:db") is None
    finally:
        await other.delete(f"{PREFIX}:db")
        await multiplexed.aclose()
        await other.aclose()


async def test_a_killed_connection_fails_what_waits_and_the_next_command_reconnects(
    connection: MultiplexedConnection, client: aioredis.Redis
) -> None:
    connection_id = await connection.execute("CLIENT", "ID")
    waiting = asyncio.create_task(connection.execute("BLPOP", f"{PREFIX}:never", 10))
    await asyncio.sleep(0.2)
    assert await client.client_kill_filter(_id=connection_id) == 1
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(waiting, 5)
    assert await connection.execute("CLIENT", "ID") != connection_id
    assert await connection.execute("PING") == "PONG"


async def test_a_silent_server_times_the_command_out(client: aioredis.Redis) -> None:
    multiplexed = MultiplexedConnection.for_client(client)
    assert multiplexed is not None
    multiplexed._reply_timeout_s = 0.5  # the client's socket timeout is 30 s
    try:
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await multiplexed.execute("BLPOP", f"{PREFIX}:never", 10)
        assert time.monotonic() - started < 5
        assert await multiplexed.execute("PING") == "PONG"  # on a new connection
    finally:
        await multiplexed.aclose()


async def test_a_cancelled_caller_leaves_the_replies_in_order(
    connection: MultiplexedConnection,
) -> None:
    blocked = asyncio.create_task(connection.execute("BLPOP", f"{PREFIX}:never", 1))
    await asyncio.sleep(0.1)
    blocked.cancel()
    # Redis answers the BLPOP (nil, after 1 s) before the PING; the PING must get "PONG".
    assert await asyncio.wait_for(connection.execute("PING"), 5) == "PONG"
    assert blocked.cancelled()


async def test_a_script_is_loaded_again_after_the_cache_is_flushed(
    connection: MultiplexedConnection, client: aioredis.Redis
) -> None:
    script = register_script(client, connection, "return redis.call('INCR', KEYS[1])")
    assert await script(keys=[f"{PREFIX}:script"]) == 1
    await client.script_flush()
    assert await script(keys=[f"{PREFIX}:script"]) == 2  # NOSCRIPT, then EVAL


async def test_an_unreachable_server_fails_clearly(tmp_path: Path) -> None:
    missing = tmp_path / "redis.sock"
    multiplexed = MultiplexedConnection(path=str(missing))
    with pytest.raises(RedisConnectionError, match="cannot connect to Redis"):
        await multiplexed.execute("PING")


def test_it_runs_under_uvloop(redis_url: str) -> None:
    """uvicorn runs the gateway on uvloop when it is installed; its transports differ."""
    outcome: list[object] = []

    async def main() -> None:
        the_client = client_for(redis_url)
        multiplexed = MultiplexedConnection.for_client(the_client)
        assert multiplexed is not None
        try:
            replies = await asyncio.gather(*(multiplexed.execute("ECHO", n) for n in range(50)))
            outcome.append(replies)
        finally:
            await multiplexed.aclose()
            await the_client.aclose()

    # Its own thread: the test session's asyncio loop is not to be replaced here.
    thread = threading.Thread(target=lambda: uvloop.run(main()))
    thread.start()
    thread.join(30)
    assert outcome == [[str(n) for n in range(50)]]


async def test_a_client_of_sentinel_s_primary_gets_no_multiplexed_connection() -> None:
    # Its server moves on a failover: a fixed-address connection would talk to a default host
    # (found once writing admissions to 127.0.0.1:6379 db 0 instead of the primary).
    client = client_for("redis:///3", sentinels=[("127.0.0.1", 1)], sentinel_master="m")
    try:
        assert isinstance(client.connection_pool, BlockingSentinelConnectionPool)
        assert client.connection_pool.connection_kwargs["db"] == 3
        assert MultiplexedConnection.for_client(client) is None
        assert Store(client).multiplexed is None
    finally:
        await client.aclose()
