"""Auth on every route, admin-only routes, key lifecycle, budgets under concurrency, rate limits,
and that no secret is ever returned."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.routing import APIRoute
from gateway_helpers import ADMIN_KEY, CODE_DOC, Gateway, auth

from gateway.auth import PUBLIC_PATHS, is_public
from protocols import PROTOCOLS, Options
from service.store.api_keys import NANO


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


async def test_every_non_public_route_needs_a_key(gw: Gateway) -> None:
    checked = 0
    for route in gw.app.routes:
        if not isinstance(route, APIRoute) or is_public(route.path):
            continue
        for method in route.methods:
            for headers in ({}, auth("mgw_nope_wrong"), auth("not-a-key"), {"Authorization": "x"}):
                response = await gw.client.request(method, concrete(route.path), headers=headers)
                assert response.status_code == 401, (method, route.path, response.text)
                assert response.json()["error"]["type"] == "unauthorized"
                assert response.headers["WWW-Authenticate"] == "Bearer"
            checked += 1
    assert checked >= 11
    for path in ("/health", "/ready", "/metrics"):
        assert (await gw.client.get(path)).status_code == 200
    # Refused before routing: a path no route matches says nothing about what exists.
    assert (await gw.client.get("/v1/no-such-route")).status_code == 401


async def test_the_openapi_schema_declares_the_bearer_key_on_protected_operations(
    gw: Gateway,
) -> None:
    schema = (await gw.client.get("/openapi.json")).json()
    scheme = schema["components"]["securitySchemes"]["BearerKey"]
    assert scheme == {"type": "http", "scheme": "bearer", "description": scheme["description"]}
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            if path in PUBLIC_PATHS:
                assert "security" not in operation, path
            else:
                assert operation["security"] == [{"BearerKey": []}], path
                assert "401" in operation["responses"], path


async def test_request_metrics_keep_their_labels_bounded(gw: Gateway) -> None:
    key = await gw.new_key()
    await gw.client.get("/v1/models", headers=auth(key))
    await gw.client.request("BREW", "/v1/models", headers=auth(key))
    metrics = (await gw.client.get("/metrics")).text
    assert 'mgw_http_requests_total{method="GET",route="/v1/models",status="200"} 1.0' in metrics
    assert 'method="other",route="/v1/models",status="405"' in metrics
    assert "BREW" not in metrics


async def test_admin_routes_refuse_ordinary_keys_and_keys_can_be_revoked(gw: Gateway) -> None:
    key = await gw.new_key()
    for method, path in (
        ("POST", "/v1/admin/keys"),
        ("GET", "/v1/admin/keys"),
        ("DELETE", "/v1/admin/keys/x"),
        ("GET", "/v1/admin/usage"),
    ):
        response = await gw.client.request(method, path, headers=auth(key), json={"name": "n"})
        assert response.status_code == 403, path
        assert response.json()["error"]["type"] == "forbidden"
    listed = (await gw.client.get("/v1/admin/keys", headers=auth(ADMIN_KEY))).json()["data"]
    assert {row["name"] for row in listed} == {"bootstrap admin", "test"}
    assert all("key" not in row and "hash" not in row for row in listed)
    key_id = key.split("_")[1]
    revoked = await gw.client.delete(f"/v1/admin/keys/{key_id}", headers=auth(ADMIN_KEY))
    assert revoked.status_code == 204
    assert (await gw.client.get("/v1/models", headers=auth(key))).status_code == 401
    gone = await gw.client.delete(f"/v1/admin/keys/{key_id}", headers=auth(ADMIN_KEY))
    assert gone.status_code == 404


async def test_keys_are_stored_as_hashes_only(gw: Gateway) -> None:
    key = await gw.new_key()
    dump = []
    async for name in gw.store.redis.scan_iter("mgw:*"):
        if await gw.store.redis.type(name) == "hash":
            dump.append(str(await gw.store.redis.hgetall(name)))
        elif await gw.store.redis.type(name) == "string":
            dump.append(str(await gw.store.redis.get(name)))
    text = "\n".join(dump)
    assert key not in text and ADMIN_KEY not in text
    assert key.split("_", 2)[2] not in text


async def test_no_secret_or_document_in_public_endpoints(
    make_gateway: Callable[..., Any],
) -> None:
    async with make_gateway(remote_api_key="sk-secret-remote-0123456789") as gw:
        key = await gw.new_key()
        body = {"protocol": "local_only", "question": "q?", "documents": [{"text": CODE_DOC}]}
        response = await gw.client.post("/v1/tasks", json=body, headers=auth(key))
        await gw.wait_for(response.json()["id"], key)
        for path in ("/health", "/ready", "/metrics", "/openapi.json"):
            text = (await gw.client.get(path)).text
            for secret in ("sk-secret-remote", ADMIN_KEY, key, "north warehouse"):
                assert secret not in text, (path, secret)


async def test_budget_holds_under_50_concurrent_tasks(gw: Gateway) -> None:
    # Each task may cost at most $0.02 (its cap is reserved: minion's worst case, a share of the
    # baseline's prompt and a full reply for each of its 12 possible calls, is more); the budget
    # fits exactly five.
    key = await gw.new_key(budget_usd=0.10)
    body = {
        "protocol": "minion",
        "question": "What is the access code?",
        "documents": [{"text": CODE_DOC}],
        "options": {"max_cost_usd": 0.02},
    }
    responses = await asyncio.gather(
        *(gw.client.post("/v1/tasks", json=body, headers=auth(key)) for _ in range(50))
    )
    accepted = [r for r in responses if r.status_code == 202]
    refused = [r for r in responses if r.status_code == 402]
    assert len(accepted) == 5 and len(refused) == 45
    error = refused[0].json()["error"]
    assert error["type"] == "budget_exceeded" and "budget" in error["message"]
    for response in accepted:
        task = await gw.wait_for(response.json()["id"], key)
        assert task["status"] == "succeeded"
    record = await gw.store.api_keys.get(key.split("_")[1])
    assert record is not None and record.budget_nano is not None
    assert record.reserved_nano == 0
    assert 0 < record.spent_nano <= record.budget_nano
    usage = (await gw.client.get("/v1/admin/usage", headers=auth(ADMIN_KEY))).json()["data"]
    assert usage[record.id]["cost_usd"] == pytest.approx(record.spent_nano / NANO)


async def test_worst_case_reservation_without_a_cap(gw: Gateway) -> None:
    # gpt-4o ($2.5/M in, $10/M out), 16k context. remote_only's one call sends the baseline's
    # prompt (a few hundred characters here, bounded at one token a character) and may get a
    # 1024-token reply: about $0.011 reserved, not a full 16k-token prompt ($0.051).
    reply = 1024 * 10e-6
    body = {"protocol": "remote_only", "question": "q?", "documents": [{"text": CODE_DOC}]}
    small = await gw.new_key(budget_usd=reply * 0.99)
    refused = await gw.client.post("/v1/tasks", json=body, headers=auth(small))
    assert refused.status_code == 402
    enough = await gw.new_key(budget_usd=reply + 2_000 * 2.5e-6)
    accepted = await gw.client.post("/v1/tasks", json=body, headers=auth(enough))
    assert accepted.status_code == 202
    assert (await gw.wait_for(accepted.json()["id"], enough))["status"] == "succeeded"
    # minions may make 24 calls with default options, but their prompts together are at most
    # half the baseline's: 24 full replies and a few hundred prompt tokens, where 24 full-context
    # prompts would be $1.23.
    minions = {**body, "protocol": "minions"}
    calls = PROTOCOLS["minions"].max_remote_calls(Options())
    within = await gw.new_key(budget_usd=calls * reply + 2_000 * 2.5e-6)
    response = await gw.client.post("/v1/tasks", json=minions, headers=auth(within))
    assert response.status_code == 202, response.text
    # local_only never costs anything, whatever the budget.
    free = {**body, "protocol": "local_only"}
    assert (await gw.client.post("/v1/tasks", json=free, headers=auth(small))).status_code == 202


async def test_a_task_over_its_cost_cap_fails_clearly_and_releases_its_reservation(
    gw: Gateway,
) -> None:
    key = await gw.new_key(budget_usd=1.0)
    body = {
        "protocol": "minions",
        "question": "What is the access code?",
        "documents": [{"text": CODE_DOC}],
        "options": {"max_cost_usd": 0.001, "chunking": "pages"},
    }
    response = await gw.client.post("/v1/tasks", json=body, headers=auth(key))
    task = await gw.wait_for(response.json()["id"], key)
    assert task["status"] == "failed"
    assert task["error"]["type"] == "cost_cap_reached" and "cost cap" in task["error"]["message"]
    assert task["partial_usage"]["remote_requests"] == 0
    record = await gw.store.api_keys.get(key.split("_")[1])
    assert record is not None and record.reserved_nano == 0 and record.spent_nano == 0
    usage = (await gw.client.get("/v1/admin/usage", headers=auth(ADMIN_KEY))).json()["data"]
    assert usage[record.id]["failed"] == 1


async def test_rate_limit_gives_429_with_retry_after(gw: Gateway) -> None:
    key = await gw.new_key(rate_limit_per_minute=3)
    statuses = [
        (await gw.client.get("/v1/models", headers=auth(key))).status_code for _ in range(5)
    ]
    assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
    limited = await gw.client.get("/v1/models", headers=auth(key))
    assert limited.json()["error"]["type"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
