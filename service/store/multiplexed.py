"""One Redis connection that many coroutines share, for the commands on the request path.

redis-py's asyncio client takes a connection from its pool for every command (a lock, a timeout
scope, a health check, a retry wrapper, then the release): on a busy gateway that cost as much
CPU as the rest of a ``POST /v1/tasks``. Redis answers the commands of one connection in the
order it received them, so concurrent commands can share a connection: each one writes its
command and waits on a future that the next reply resolves. hiredis (C) packs the commands and
parses the replies.

Only single commands of the request path go through here (the task admission script and the
rate-limit leases); pipelines, transactions, blocking reads and everything else stay on redis-py.
A TLS server (``rediss://``) has no multiplexed connection: ``MultiplexedConnection.for_client``
returns None and the caller keeps to redis-py.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import AuthenticationError, NoScriptError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

Argument = str | bytes | int | float
ScriptCall = Callable[..., Awaitable[Any]]  # (keys=[...], args=[...]) -> the script's reply


class _Replies(asyncio.Protocol):
    """The connection's protocol: replies resolve the waiting futures in order."""

    def __init__(self, encoding: str | None, reply_timeout_s: float) -> None:
        self._reader = hiredis.Reader(encoding=encoding, replyError=ResponseError)
        self._waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._reply_timeout_s = reply_timeout_s
        self._transport: asyncio.Transport | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._lost: Exception | None = None
        self.closed = False
        self.finished = asyncio.Event()  # the transport is gone (its socket closed)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an ``asyncio.Transport`` instance under uvloop (which uvicorn picks), only alike.
        self._transport = cast(asyncio.Transport, transport)

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        if self.closed or self._transport is None:
            raise RedisConnectionError("the Redis connection is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((future, time.monotonic()))
        self._transport.write(packed)
        if self._watchdog is None:
            self._watchdog = loop.call_later(1.0, self._check_overdue)
        return future

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self._abort(RedisConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not self._waiting:
                self._abort(RedisConnectionError("a Redis reply that no command waited for"))
                return
            future, _ = self._waiting.popleft()
            if future.done():  # its caller was cancelled; the reply is dropped
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(_classify(reply))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        error = self._lost or RedisConnectionError(f"the Redis connection was lost: {exc or 'EOF'}")
        while self._waiting:
            future, _ = self._waiting.popleft()
            if not future.done():  # an instance each: raised in many tasks, one would collect
                future.set_exception(type(error)(*error.args))  # all their tracebacks
        self.finished.set()

    def close(self) -> None:
        if self._transport is not None and not self.closed:
            self._transport.close()
        self.closed = True

    def _check_overdue(self) -> None:
        self._watchdog = None
        if self.closed or not self._waiting:
            return
        oldest = self._waiting[0][1]
        if time.monotonic() - oldest > self._reply_timeout_s:
            self._abort(RedisTimeoutError(f"no Redis reply in {self._reply_timeout_s:g} s"))
            return
        self._watchdog = asyncio.get_running_loop().call_later(1.0, self._check_overdue)

    def _abort(self, error: Exception) -> None:
        logger.warning("closing the multiplexed Redis connection: %s", error)
        self._lost = error
        if self._transport is not None:
            self._transport.abort()  # connection_lost fails every waiting command


def _pack(command: tuple[Argument, ...]) -> bytes:
    # hiredis's stub types the argument as a 1-tuple; any tuple of these is packed.
    packed: bytes = hiredis.pack_command(command)  # type: ignore[arg-type]
    return packed


def _classify(error: ResponseError) -> RedisError:
    message = str(error)
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    if message.startswith(("NOAUTH", "WRONGPASS")):
        return AuthenticationError(message)
    return error


class MultiplexedConnection:
    """Connects on first use and again after a loss; a command sent while the connection is
    down fails with redis-py's ``ConnectionError``, one without a reply in ``reply_timeout_s``
    with its ``TimeoutError`` (and the connection is replaced)."""

    def __init__(
        self,
        *,
        path: str | None = None,
        host: str = "localhost",
        port: int = 6379,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        encoding: str | None = "utf-8",
        connect_timeout_s: float = 5.0,
        reply_timeout_s: float = 30.0,
    ) -> None:
        self._address = (path, host, port)
        self._setup: list[tuple[Argument, ...]] = []
        if password is not None:
            self._setup.append(("AUTH", username, password) if username else ("AUTH", password))
        if db:
            self._setup.append(("SELECT", db))
        self._encoding = encoding
        self._connect_timeout_s = connect_timeout_s
        self._reply_timeout_s = reply_timeout_s
        self._replies: _Replies | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Lock | None = None

    @classmethod
    def for_client(cls, client: aioredis.Redis) -> MultiplexedConnection | None:
        """A connection to the server ``client`` talks to, with its database, credentials,
        timeouts and reply decoding; None for TLS and for a client of Sentinel's primary."""
        pool = client.connection_pool
        # TLS, or a Sentinel pool: its server is the primary of the moment, not a fixed address.
        if issubclass(pool.connection_class, SSLConnection) or isinstance(
            pool, SentinelConnectionPool
        ):
            return None
        options = pool.connection_kwargs
        is_unix = issubclass(pool.connection_class, UnixDomainSocketConnection)
        return cls(
            path=options["path"] if is_unix else None,
            host=options.get("host", "localhost"),
            port=int(options.get("port", 6379)),
            db=int(options.get("db", 0) or 0),
            username=options.get("username"),
            password=options.get("password"),
            encoding=options.get("encoding", "utf-8") if options.get("decode_responses") else None,
            connect_timeout_s=options.get("socket_connect_timeout") or 5.0,
            reply_timeout_s=options.get("socket_timeout") or 30.0,
        )

    async def execute(self, *command: Argument) -> Any:
        replies = self._replies
        if replies is None or replies.closed or self._loop is not asyncio.get_running_loop():
            replies = await self._connect()
        return await replies.send(_pack(command))

    async def aclose(self) -> None:
        replies, self._replies = self._replies, None
        if replies is not None and self._loop is asyncio.get_running_loop():
            replies.close()
            # The transport closes its socket one turn of the loop later: wait for it, so that
            # a loop ending right after this leaves no socket open.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(replies.finished.wait(), 1.0)

    async def _connect(self) -> _Replies:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (tests): the old connection is unusable
            self._loop, self._replies, self._connecting = loop, None, asyncio.Lock()
        assert self._connecting is not None
        async with self._connecting:
            if self._replies is not None and not self._replies.closed:
                return self._replies  # another command connected meanwhile
            path, host, port = self._address
            protocol = _Replies(self._encoding, self._reply_timeout_s)
            try:
                async with asyncio.timeout(self._connect_timeout_s):
                    if path is not None:
                        await loop.create_unix_connection(lambda: protocol, path)
                    else:
                        await loop.create_connection(lambda: protocol, host, port)
                    for command in self._setup:
                        await protocol.send(_pack(command))
            except TimeoutError:
                protocol.close()
                raise RedisTimeoutError(f"connecting to Redis timed out at {self}") from None
            except OSError as exc:
                protocol.close()
                raise RedisConnectionError(f"cannot connect to Redis at {self}: {exc}") from None
            except BaseException:
                protocol.close()
                raise
            self._replies = protocol
            return protocol

    def __str__(self) -> str:
        path, host, port = self._address
        return f"unix://{path}" if path is not None else f"{host}:{port}"


def register_script(
    client: aioredis.Redis, multiplexed: MultiplexedConnection | None, source: str
) -> ScriptCall:
    """``client.register_script(source)``, run over ``multiplexed`` when there is one."""
    script = client.register_script(source)
    if multiplexed is None:
        return script

    async def run(keys: Sequence[Argument] = (), args: Sequence[Argument] = ()) -> Any:
        try:
            return await multiplexed.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:  # a restarted or flushed server: EVAL loads it again
            return await multiplexed.execute("EVAL", source, len(keys), *keys, *args)

    return run
