"""The store failing under a running gateway (real uvicorn, a private embedded Redis): an outage is
a 503 in the envelope and the keep-alive connection survives it; a full store (maxmemory,
noeviction) is a 507 that writes nothing; a hostile Last-Event-ID replays instead of failing; HEAD
probes answer."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from gateway_helpers import ADMIN_KEY, auth, scripted_engines, serve_in_loop

from gateway.app import create_app
from service.store import EmbeddedRedis, Store
from service.store.connection import client_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def private_store(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedRedis, Store]]:
    embedded = EmbeddedRedis(tmp_path / "redis", maxmemory_bytes=64 * 2**20)
    store = Store(client_for(embedded.url))
    yield embedded, store
    await store.aclose()
    embedded.close()


class KeepAlive:
    """One raw HTTP/1.1 connection: requests go over the same socket, or fail if it closed."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.host = f"{parsed.hostname}:{parsed.port}"
        self.sock = socket.create_connection((parsed.hostname, parsed.port), timeout=10)
        self.reader = self.sock.makefile("rb")

    def get(self, path: str, token: str) -> tuple[int, dict[str, Any]]:
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {token}\r\n"
            "Connection: keep-alive\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        status = int(self.reader.readline().split()[1])
        length = 0
        while (line := self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
            assert name.lower() != "connection" or value.strip() != "close", "connection closed"
        return status, json.loads(self.reader.read(length))

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


async def test_a_redis_outage_is_a_503_and_the_connection_survives(
    private_store: tuple[EmbeddedRedis, Store], make_settings: Callable[..., Any]
) -> None:
    embedded, store = private_store
    settings = make_settings(admin_key=ADMIN_KEY, auth_cache_ttl_s=30, runner_enabled=False)
    app = create_app(settings, engines=scripted_engines(), store=store)
    async with serve_in_loop(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            made = await http.post("/v1/admin/keys", json={"name": "t"}, headers=auth(ADMIN_KEY))
            key = made.json()["key"]
        connection = await asyncio.to_thread(KeepAlive, url)
        try:
            status, _ = await asyncio.to_thread(connection.get, "/v1/tasks", key)
            assert status == 200  # the key is now in the auth cache
            embedded.close()  # the store goes away
            status, body = await asyncio.to_thread(connection.get, "/v1/tasks", key)
            assert status == 503, body
            assert body["error"]["type"] == "unavailable"
            # Same socket, next request: still answered (it was dropped, reset, before).
            status, body = await asyncio.to_thread(connection.get, "/v1/tasks", key)
            assert status == 503, body
        finally:
            connection.close()


async def test_a_full_store_is_a_507_and_nothing_is_half_written(
    private_store: tuple[EmbeddedRedis, Store], make_settings: Callable[..., Any]
) -> None:
    _, store = private_store
    settings = make_settings(admin_key=ADMIN_KEY, runner_enabled=False)
    app = create_app(settings, engines=scripted_engines(), store=store)
    async with serve_in_loop(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        made = await http.post("/v1/admin/keys", json={"name": "t"}, headers=auth(ADMIN_KEY))
        key = made.json()["key"]
        used = int((await store.redis.info("memory"))["used_memory"])
        await store.redis.config_set("maxmemory", used + 256 * 1024)
        files = {"file": ("big.txt", ("word " * 400_000).encode(), "text/plain")}
        full = await http.post("/v1/documents", files=files, headers=auth(key))
        assert full.status_code == 507, full.text
        assert full.json()["error"]["type"] == "insufficient_storage"
        assert "store is full" in full.json()["error"]["message"]
        task = {"protocol": "local_only", "question": "Q?", "documents": [{"text": "x" * 9}]}
        # Reads still work; the gateway is alive and says why writes fail.
        assert (await http.get("/v1/tasks", headers=auth(key))).status_code == 200
        assert (await http.get("/health")).status_code == 200
        await store.redis.config_set("maxmemory", 64 * 2**20)
        posted = await http.post("/v1/tasks", json=task, headers=auth(key))
        assert posted.status_code == 202, posted.text


async def test_head_probes_and_a_hostile_last_event_id(
    make_gateway: Callable[..., Any],
) -> None:
    async with make_gateway() as gw:
        assert (await gw.client.head("/health")).status_code == 200
        assert (await gw.client.head("/ready")).status_code == 200
        key = await gw.new_key()
        task = {"protocol": "local_only", "question": "Code?", "documents": [{"text": "4817"}]}
        posted = await gw.client.post("/v1/tasks", json=task, headers=auth(key))
        task_id = posted.json()["id"]
        await gw.wait_for(task_id, key)
        hostile_ids: list[str | bytes] = [
            "99999999999999999999999-1",
            "1-99999999999999999999999",
            "18446744073709551616",
            "٣-1".encode(),  # a digit to str.isdigit, not to Redis
        ]
        for hostile in hostile_ids:
            headers: dict[str, str | bytes] = {**auth(key), "Last-Event-ID": hostile}
            async with gw.client.stream(
                "GET", f"/v1/tasks/{task_id}/events", headers=headers
            ) as stream:
                text = "".join([chunk async for chunk in stream.aiter_text()])
            assert stream.status_code == 200
            assert "unavailable" not in text and "event: final" in text, text
