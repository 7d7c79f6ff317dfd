"""``/v1/tasks`` over scripted engines: submit, follow, results, usage, pagination, idempotency."""

from __future__ import annotations

import json
from typing import Any

from gateway_helpers import CODE_DOC, Gateway, auth


def task_body(protocol: str = "minions", **extra: Any) -> dict[str, Any]:
    return {
        "protocol": protocol,
        "question": "What is the access code?",
        "documents": [{"text": CODE_DOC, "name": "codes.txt"}],
        "options": {"chunking": "pages"},
        **extra,
    }


async def test_each_protocol_answers_with_usage_and_cost(gw: Gateway) -> None:
    key = await gw.new_key()
    for protocol in ("minions", "minion", "local_only", "remote_only"):
        response = await gw.client.post("/v1/tasks", json=task_body(protocol), headers=auth(key))
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert accepted["status"] == "queued" and accepted["id"].startswith("task_")
        task = await gw.wait_for(accepted["id"], key)
        assert task["status"] == "succeeded", task
        result = task["result"]
        assert "4817" in result["answer"]
        assert result["protocol"] == protocol
        assert set(result["usage"]) >= {"local", "remote"}
        assert "cost_usd" in result and "timings" in result and "warnings" in result
        if protocol != "local_only":
            assert result["cost_usd"]["remote"] > 0


async def test_a_document_shorter_than_a_round_is_answered_within_the_remote_budget(
    gw: Gateway,
) -> None:
    """With the default budget (half of what sending the documents costs), a few lines are
    cheaper to read locally than one MinionS round: the task says so in its result."""
    key = await gw.new_key()
    for fraction, fallback in ((0.5, "local_only"), (1.0, "remote_only")):
        body = task_body(options={"chunking": "pages", "max_remote_fraction": fraction})
        response = await gw.client.post("/v1/tasks", json=body, headers=auth(key))
        task = await gw.wait_for(response.json()["id"], key)
        assert task["status"] == "succeeded", task
        result = task["result"]
        baseline, guard = result["baseline"], result["cost_guard"]
        assert baseline["remote_prompt_tokens"] > 0 and baseline["exceeds_context"] is False
        assert guard["budget_prompt_tokens"] == int(fraction * baseline["remote_prompt_tokens"])
        assert [f["kind"] for f in guard["fallbacks"]] == [fallback]
        spent = result["usage"]["remote"]["prompt_tokens"]
        assert spent == guard["spent_prompt_tokens"] <= guard["budget_prompt_tokens"]
        assert any("not even one round fits" in w for w in result["warnings"])


async def test_late_sse_client_gets_all_events_then_ends(gw: Gateway) -> None:
    key = await gw.new_key()
    response = await gw.client.post("/v1/tasks", json=task_body(), headers=auth(key))
    task_id = response.json()["id"]
    await gw.wait_for(task_id, key)
    events = await read_sse(gw, task_id, key)
    types = [event["event"] for event in events]
    assert types[:2] == ["baseline", "round_started"]
    assert {"plan", "jobs_progress", "remote_call"} <= set(types)
    assert types[-1] == "final"
    final = json.loads(events[-1]["data"])
    assert final["answer"] == "4817" and final["task_id"] == task_id
    progress = [json.loads(e["data"]) for e in events if e["event"] == "jobs_progress"]
    assert progress[-1]["done"] == progress[-1]["total"] == 3
    # Resuming after an event id replays only what followed it.
    resumed = await read_sse(gw, task_id, key, last_event_id=events[-2]["id"])
    assert [event["event"] for event in resumed] == ["final"]


async def read_sse(
    gw: Gateway, task_id: str, key: str, last_event_id: str | None = None
) -> list[dict[str, str]]:
    headers = auth(key) | ({"Last-Event-ID": last_event_id} if last_event_id else {})
    events: list[dict[str, str]] = []
    async with gw.client.stream("GET", f"/v1/tasks/{task_id}/events", headers=headers) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        current: dict[str, str] = {}
        async for line in stream.aiter_lines():
            line = line.rstrip("\r")
            if not line:
                if current:
                    events.append(current)
                current = {}
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            current[field] = value.lstrip(" ")
        if current:
            events.append(current)
    return events


async def test_live_sse_client_follows_a_running_task(gw: Gateway) -> None:
    key = await gw.new_key()
    response = await gw.client.post("/v1/tasks", json=task_body(), headers=auth(key))
    events = await read_sse(gw, response.json()["id"], key)
    assert events[-1]["event"] == "final"


async def test_idempotency_key_returns_the_same_task(gw: Gateway) -> None:
    key = await gw.new_key()
    headers = auth(key) | {"Idempotency-Key": "order-42"}
    first = await gw.client.post("/v1/tasks", json=task_body(), headers=headers)
    again = await gw.client.post("/v1/tasks", json=task_body(), headers=headers)
    assert first.status_code == 202 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await gw.client.post("/v1/tasks", json=task_body("local_only"), headers=headers)
    assert other.status_code == 409 and other.json()["error"]["type"] == "conflict"
    # Another key's identical Idempotency-Key is its own.
    key2 = await gw.new_key()
    third = await gw.client.post(
        "/v1/tasks", json=task_body(), headers=auth(key2) | {"Idempotency-Key": "order-42"}
    )
    assert third.status_code == 202 and third.json()["id"] != first.json()["id"]


async def test_an_idempotency_key_out_of_bounds_is_refused_and_documented(gw: Gateway) -> None:
    key = await gw.new_key()
    for value in ("", "k" * 256):
        response = await gw.client.post(
            "/v1/tasks", json=task_body(), headers=auth(key) | {"Idempotency-Key": value}
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"]["param"] == "Idempotency-Key"
    assert (await gw.client.get("/v1/tasks", headers=auth(key))).json()["data"] == []
    longest = auth(key) | {"Idempotency-Key": "k" * 255}
    assert (await gw.client.post("/v1/tasks", json=task_body(), headers=longest)).status_code == 202
    schema = (await gw.client.get("/openapi.json")).json()
    parameters = schema["paths"]["/v1/tasks"]["post"]["parameters"]
    assert {"name": "Idempotency-Key", "in": "header"}.items() <= parameters[0].items()
    assert parameters[0]["schema"]["maxLength"] == 255


async def test_pagination_filters_and_ownership(gw: Gateway) -> None:
    key, other = await gw.new_key(), await gw.new_key()
    ids = []
    for index in range(7):
        protocol = "local_only" if index % 2 else "remote_only"
        response = await gw.client.post("/v1/tasks", json=task_body(protocol), headers=auth(key))
        ids.append(response.json()["id"])
    await gw.client.post("/v1/tasks", json=task_body(), headers=auth(other))
    for task_id in ids:
        await gw.wait_for(task_id, key)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await gw.client.get("/v1/tasks", params=params, headers=auth(key))).json()
        seen += [task["id"] for task in page["data"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert seen == list(reversed(ids))  # newest first, each once, only this key's
    filtered = await gw.client.get(
        "/v1/tasks", params={"protocol": "local_only", "status": "succeeded"}, headers=auth(key)
    )
    assert [t["id"] for t in filtered.json()["data"]] == [ids[5], ids[3], ids[1]]
    # Another key cannot read these tasks; the admin sees every task.
    assert (await gw.client.get(f"/v1/tasks/{ids[0]}", headers=auth(other))).status_code == 404
    everything = await gw.client.get("/v1/tasks", params={"limit": 100}, headers=auth_admin())
    assert len(everything.json()["data"]) == 8


def auth_admin() -> dict[str, str]:
    from gateway_helpers import ADMIN_KEY

    return auth(ADMIN_KEY)


async def test_uploaded_document_is_stored_once_and_referenced(gw: Gateway) -> None:
    key = await gw.new_key()
    files = {"file": ("codes.txt", CODE_DOC.encode(), "text/plain")}
    first = await gw.client.post("/v1/documents", files=files, headers=auth(key))
    assert first.status_code == 201, first.text
    uploaded = first.json()
    assert uploaded["pages"] == 3 and uploaded["tokens"] > 0
    again = await gw.client.post("/v1/documents", files=files, headers=auth(key))
    assert again.json()["document_id"] == uploaded["document_id"]
    body = task_body(documents=[{"document_id": uploaded["document_id"]}])
    response = await gw.client.post("/v1/tasks", json=body, headers=auth(key))
    task = await gw.wait_for(response.json()["id"], key)
    assert task["result"]["answer"] == "4817"
    # Another key cannot use it.
    other = await gw.new_key()
    refused = await gw.client.post("/v1/tasks", json=body, headers=auth(other))
    assert refused.status_code == 404 and refused.json()["error"]["param"].startswith("documents")


async def test_reference_answer_is_graded_and_usage_is_aggregated(gw: Gateway) -> None:
    key = await gw.new_key()
    body = task_body(reference_answer="4817")
    response = await gw.client.post("/v1/tasks", json=body, headers=auth(key))
    task = await gw.wait_for(response.json()["id"], key)
    assert task["accuracy"] == {"exact_match": True, "f1": 1.0}
    for by in ("key", "protocol", "day"):
        usage = await gw.client.get("/v1/admin/usage", params={"by": by}, headers=auth_admin())
        assert usage.status_code == 200
        rows = usage.json()["data"]
        assert sum(row["tasks"] for row in rows.values()) == 1
        row = next(iter(rows.values()))
        assert row["succeeded"] == 1 and row["exact_match_rate"] == 1.0
        assert row["remote_prompt_tokens"] > 0 and row["cost_usd"] > 0
    metrics = (await gw.client.get("/metrics")).text
    assert 'mgw_tasks_total{protocol="minions",status="succeeded"} 1.0' in metrics
    assert "mgw_remote_cost_usd_total" in metrics and "mgw_queue_depth" in metrics
    assert 'route="/v1/tasks/{task_id}"' in metrics
