"""Property-based tests from the OpenAPI schema (schemathesis) against the live gateway with a
valid admin key: no 5xx anywhere, and every error in the ``{"error": {...}}`` envelope."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from gateway_helpers import ADMIN_KEY, scripted_engines
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from support.openai_server import serve_in_thread

from gateway.app import create_app
from service.settings import Settings
from service.store import EmbeddedRedis
from service.store.connection import client_for


def _flush(url: str) -> None:
    async def flush() -> None:
        client = client_for(url)
        await client.flushdb()
        await client.aclose()

    asyncio.run(flush())


@pytest.fixture(scope="module")
def live_url() -> Iterator[str]:
    url = os.environ.get("MGW_TEST_REDIS_URL")
    embedded = None
    data_dir = Path(tempfile.mkdtemp(prefix="mgw-schemathesis-"))
    if not url:
        embedded = EmbeddedRedis(data_dir / "redis")
        url = embedded.url
    _flush(url)
    app_settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=data_dir,
        redis_url=url,
        admin_key=SecretStr(ADMIN_KEY),
        rate_limit_per_minute=100_000,
        max_body_bytes=256 * 1024,
    )
    # The server runs in its own thread and loop: its store is built there by the lifespan.
    app = create_app(app_settings, engines=scripted_engines(hang_on=None))
    # Client and server share the GIL: switch threads sooner than every 5 ms.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    try:
        with serve_in_thread(app) as base_url:
            yield base_url
    finally:
        sys.setswitchinterval(interval)
        _flush(url)
        if embedded is not None:
            embedded.close()


SESSION = requests.Session()  # one keep-alive connection for every call
# The schema does not depend on runtime state: take it from an app that is never started.
schema = schemathesis.openapi.from_dict(
    create_app(Settings(_env_file=None, admin_key=SecretStr(ADMIN_KEY))).openapi()  # type: ignore[call-arg]
)
# The coverage phase sends hundreds of boundary cases per operation: too slow for every run.
schema.config.phases.coverage.enabled = False


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_server_errors_and_errors_in_the_envelope(live_url: str, case: Any) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    if case.path == "/v1/admin/keys/{key_id}" and case.path_parameters.get("key_id") == "bootstrap":
        return  # do not revoke the key the test runs with
    response = case.call(base_url=live_url, headers=headers, timeout=30, session=SESSION)
    assert response.status_code < 500, (case.method, case.path, response.text[:500])
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, body
        assert isinstance(body["error"]["type"], str) and isinstance(body["error"]["message"], str)
        assert set(body["error"]) <= {"type", "message", "param"}
