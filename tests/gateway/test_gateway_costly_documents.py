"""Hostile documents against a gateway on a real HTTP port: a 4 KB PDF that costs a parser ~10
CPU-seconds is refused within the deadline (413 naming it), /health stays fast meanwhile, and no
parsing work is left running, also when the client leaves first."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from gateway_helpers import ADMIN_KEY, auth
from support.hostile_pdf import costly_pdf, parsing_children, wait_no_parsing_children

pytestmark = pytest.mark.timeout(120)
DEADLINE_S = 2.0


async def new_key(http: httpx.AsyncClient) -> str:
    made = await http.post("/v1/admin/keys", json={"name": "t"}, headers=auth(ADMIN_KEY))
    assert made.status_code == 201, made.text
    return str(made.json()["key"])


async def worst_health_latency(http: httpx.AsyncClient, stop: asyncio.Event) -> float:
    worst = 0.0
    while not stop.is_set():
        started = time.perf_counter()
        assert (await http.get("/health")).status_code == 200
        worst = max(worst, time.perf_counter() - started)
        await asyncio.sleep(0.05)
    return worst


async def test_a_costly_pdf_is_refused_at_the_deadline_and_health_stays_fast(
    make_server: Callable[..., Any],
) -> None:
    async with make_server(pdf_parse_timeout_s=DEADLINE_S) as (url, _):
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            key = await new_key(http)
            stop = asyncio.Event()
            probe = asyncio.create_task(worst_health_latency(http, stop))
            started = time.monotonic()
            files = {"file": ("costly.pdf", costly_pdf(), "application/pdf")}
            refused = await http.post("/v1/documents", files=files, headers=auth(key))
            took = time.monotonic() - started
            stop.set()
            worst = await probe
            assert refused.status_code == 413, refused.text
            error = refused.json()["error"]
            assert error["param"] == "file" and "costly.pdf is too costly" in error["message"]
            assert took < DEADLINE_S + 1.5
            assert worst < 0.1, f"/health took {worst * 1000:.0f} ms while the PDF was parsed"

            # The same document inline in a task: refused the same way, naming its field.
            body = {
                "protocol": "local_only",
                "question": "Code?",
                "documents": [{"pdf_base64": base64.b64encode(costly_pdf()).decode()}],
            }
            posted = await http.post("/v1/tasks", json=body, headers=auth(key))
            assert posted.status_code == 413, posted.text
            assert posted.json()["error"]["param"] == "documents.0.pdf_base64"

        # Nothing is left working: no parser, and this process (the gateway) is idle again.
        wait_no_parsing_children()
        before = os.times()
        await asyncio.sleep(1.0)
        after = os.times()
        assert (after.user - before.user) + (after.system - before.system) < 0.5


async def test_a_client_that_leaves_stops_the_parse(make_server: Callable[..., Any]) -> None:
    async with make_server(pdf_parse_timeout_s=60) as (url, _):
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            key = await new_key(http)
        files = {"file": ("costly.pdf", costly_pdf(), "application/pdf")}
        async with httpx.AsyncClient(base_url=url, timeout=1.0) as impatient:
            with pytest.raises(httpx.ReadTimeout):
                await impatient.post("/v1/documents", files=files, headers=auth(key))
        # The parser would run ~10 s more; the disconnect stops it within a poll or two.
        await asyncio.to_thread(wait_no_parsing_children, 3.0)
        # The same PDF inline in a task.
        body = {
            "protocol": "local_only",
            "question": "Code?",
            "documents": [{"pdf_base64": base64.b64encode(costly_pdf()).decode()}],
        }
        async with httpx.AsyncClient(base_url=url, timeout=1.0) as impatient:
            with pytest.raises(httpx.ReadTimeout):
                await impatient.post("/v1/tasks", json=body, headers=auth(key))
        await asyncio.to_thread(wait_no_parsing_children, 3.0)
        assert not parsing_children()
