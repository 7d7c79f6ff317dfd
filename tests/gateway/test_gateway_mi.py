"""Mutual information of each minion/minions task, scored in the background after it succeeds
(service/mi_background.py), over scripted engines whose estimates are known by hand
(support.mi_engines) and a real Redis."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from gateway_helpers import Gateway, auth
from support.mi_engines import (
    NoScoreLocal,
    ScoringLocal,
    local_reader,
    planted_term,
    remote_planner,
)
from support.scripted_engine import ScriptedEngine

from service import keys
from service.engines import EngineSet

NAMES = ("alpha", "bravo", "charlie", "delta")


def document(index: int) -> str:
    """Three pages (one chunk each with chunking=pages); the code is on the second."""
    name = NAMES[index]
    return (
        f"The weather in {name} town was mild.\f"
        f"The access code for the {name} warehouse is {4817 + index}.\f"
        f"Lunch in {name} town is served at noon."
    )


def body(protocol: str = "minions", index: int = 0) -> dict[str, Any]:
    return {
        "protocol": protocol,
        "question": "What is the access code?",
        "documents": [{"text": document(index), "name": f"doc{index}.txt"}],
        "options": {"chunking": "pages"},
    }


def engines(local: ScriptedEngine | None = None) -> EngineSet:
    local = local or ScoringLocal(model="smollm2-135m-instruct", context_window=8192)
    return EngineSet(local=local, remote=remote_planner(), remote_stand_in=False)


async def submit(gw: Gateway, key: str, payload: dict[str, Any]) -> dict[str, Any]:
    response = await gw.client.post("/v1/tasks", json=payload, headers=auth(key))
    assert response.status_code == 202, response.text
    task = await gw.wait_for(response.json()["id"], key)
    assert task["status"] == "succeeded", task
    return task


async def scored(gw: Gateway, key: str, task_id: str, limit_s: float = 10.0) -> dict[str, Any]:
    """The task's view once its MI is no longer pending."""
    deadline = asyncio.get_running_loop().time() + limit_s
    while True:
        view: dict[str, Any] = (
            await gw.client.get(f"/v1/tasks/{task_id}", headers=auth(key))
        ).json()
        if view["mi"] is not None and view["mi"]["status"] != "pending":
            return view
        assert asyncio.get_running_loop().time() < deadline, view["mi"]
        await asyncio.sleep(0.02)


async def test_minions_task_gets_mi_fields_with_the_hand_computed_values(
    make_gateway: Callable[..., Any],
) -> None:
    async with make_gateway(engines()) as gw:
        key = await gw.new_key()
        first = await submit(gw, key, body(index=0))
        view = await scored(gw, key, first["id"])
        mi = view["mi"]
        assert view["status"] == "succeeded" and view["result"]["answer"] == "4817"
        # 3 chunks, no reference yet; "answer: 4817." (2 words) fits only its own chunk.
        assert mi["status"] == "succeeded", mi
        assert mi["n_contexts"] == 3 and mi["n_task_contexts"] == 3
        assert mi["n_reference_contexts"] == 0 and mi["n_compressions"] == 1
        assert mi["mi_nats"] == pytest.approx(planted_term(3), abs=1e-9)
        assert mi["mi_bits"] == pytest.approx(planted_term(3) / math.log(2), abs=1e-9)
        assert mi["bits_per_token"] == pytest.approx(mi["mi_bits"] / 2, abs=1e-12)
        assert 0 < mi["mi_nats"] <= mi["upper_bound_nats"] == pytest.approx(math.log(3))
        assert mi["scorer_model"] == "smollm2-135m-instruct"
        assert mi["scorer"] == "engine-scripted:smollm2-135m-instruct:plain-v1"
        assert mi["seconds"] >= 0 and mi["error"] is None
        # A later task is scored against its own chunks plus the first task's, from Redis.
        second = await scored(gw, key, (await submit(gw, key, body(index=1)))["id"])
        assert second["mi"]["n_reference_contexts"] == 3 and second["mi"]["n_contexts"] == 6
        assert second["mi"]["mi_nats"] == pytest.approx(planted_term(6), abs=1e-9)
        # The record holds numbers only: no document text crosses into the view.
        assert "warehouse" not in json.dumps(second["mi"])


async def test_minion_task_is_scored_against_its_documents_and_the_reference_set(
    make_gateway: Callable[..., Any],
) -> None:
    async with make_gateway(engines()) as gw:
        key = await gw.new_key()
        await scored(gw, key, (await submit(gw, key, body(index=0)))["id"])  # minions: 3 shared
        view = await scored(gw, key, (await submit(gw, key, body("minion", index=1)))["id"])
        # Unchunked minion: one context (its document) + the 3 reference chunks; "4817." alone.
        mi = view["mi"]
        assert mi["status"] == "succeeded", mi
        assert (mi["n_task_contexts"], mi["n_reference_contexts"]) == (1, 3)
        assert mi["mi_nats"] == pytest.approx(planted_term(4), abs=1e-9)
        assert mi["bits_per_token"] == pytest.approx(mi["mi_bits"], abs=1e-12)


async def test_the_answer_and_final_event_come_before_the_estimate(
    make_gateway: Callable[..., Any],
) -> None:
    local = ScoringLocal(hold=True, model="smollm2-135m-instruct", context_window=8192)
    async with make_gateway(engines(local)) as gw:
        key = await gw.new_key()
        task = await submit(gw, key, body())
        assert task["mi"]["status"] == "pending" and task["mi"]["mi_nats"] is None
        events = await gw.store.events.read(task["id"])
        assert events[-1].type == "final" and events[-1].data["answer"] == "4817"
        for _ in range(500):  # scoring has started and is held
            if local.score_calls:
                break
            await asyncio.sleep(0.01)
        assert local.score_calls > 0
        view = (await gw.client.get(f"/v1/tasks/{task['id']}", headers=auth(key))).json()
        assert view["mi"]["status"] == "pending" and view["result"]["answer"] == "4817"
        local.release.set()
        view = await scored(gw, key, task["id"])
        assert view["mi"]["status"] == "succeeded"


async def test_scoring_failure_is_recorded_and_the_task_stays_succeeded(
    make_gateway: Callable[..., Any],
) -> None:
    local = ScoringLocal(fail=True, model="smollm2-135m-instruct", context_window=8192)
    async with make_gateway(engines(local)) as gw:
        key = await gw.new_key()
        view = await scored(gw, key, (await submit(gw, key, body()))["id"])
        assert view["status"] == "succeeded" and view["result"]["answer"] == "4817"
        assert view["mi"]["status"] == "error"
        assert "scripted scoring failure" in view["mi"]["error"]
        assert view["mi"]["mi_nats"] is None
        # The task's chunks still joined the reference set.
        assert await gw.store.redis.llen(keys.MI_REFERENCE) == 3


async def test_an_engine_that_cannot_score_is_recorded_as_unsupported(
    make_gateway: Callable[..., Any],
) -> None:
    local = NoScoreLocal(default=local_reader, model="m", context_window=8192)
    async with make_gateway(engines(local)) as gw:
        key = await gw.new_key()
        view = await scored(gw, key, (await submit(gw, key, body()))["id"])
        assert view["mi"]["status"] == "unsupported"
        assert "cannot score" in view["mi"]["error"]


async def test_baselines_and_disabled_mi_get_no_estimate(make_gateway: Callable[..., Any]) -> None:
    local = ScoringLocal(model="smollm2-135m-instruct", context_window=8192)
    async with make_gateway(engines(local)) as gw:
        key = await gw.new_key()
        for protocol in ("local_only", "remote_only"):
            task = await submit(gw, key, body(protocol))
            assert task["mi"] is None
    async with make_gateway(engines(local), mi_enabled=False) as gw:
        key = await gw.new_key()
        task = await submit(gw, key, body("minions"))
        assert task["mi"] is None
    assert local.score_calls == 0
    assert await gw.store.redis.llen(keys.MI_REFERENCE) == 0


async def test_the_reference_list_is_capped(make_gateway: Callable[..., Any]) -> None:
    async with make_gateway(engines(), mi_reference_size=2) as gw:
        key = await gw.new_key()
        ids = []
        for index in range(3):
            task = await submit(gw, key, body(index=index))
            view = await scored(gw, key, task["id"])
            ids.append(task["id"])
        # Each task shares max(1, 2 // 4) = 1 chunk; the list keeps the 2 newest.
        assert view["mi"]["n_reference_contexts"] == 2 and view["mi"]["n_contexts"] == 5
        entries = [json.loads(e) for e in await gw.store.redis.lrange(keys.MI_REFERENCE, 0, -1)]
        assert [entry["task"] for entry in entries] == [ids[2], ids[1]]


async def test_shutdown_cancels_scoring_and_records_it(make_gateway: Callable[..., Any]) -> None:
    local = ScoringLocal(hold=True, model="smollm2-135m-instruct", context_window=8192)
    async with make_gateway(engines(local)) as gw:
        key = await gw.new_key()
        task = await submit(gw, key, body())
        for _ in range(500):
            if local.score_calls:
                break
            await asyncio.sleep(0.01)
    record = await gw.store.tasks.get(task["id"])
    assert record is not None and record.status == "succeeded"
    assert record.mi is not None and record.mi["status"] == "cancelled"


async def test_an_estimate_whose_scorer_died_ends_as_an_error(
    make_gateway: Callable[..., Any],
) -> None:
    async with make_gateway(engines(), mi_timeout_s=5.0) as gw:
        key = await gw.new_key()
        task_id = (await submit(gw, key, body()))["id"]
        await scored(gw, key, task_id)
        # What a gateway killed while scoring leaves behind: "pending", due at a time now past.
        due = {"status": "pending", "expires_at": 1.0}
        await gw.store.redis.hset(keys.task(task_id), "mi", json.dumps(due))
        view = (await gw.client.get(f"/v1/tasks/{task_id}", headers=auth(key))).json()
        assert view["mi"]["status"] == "error"
        assert "stopped before recording an estimate" in view["mi"]["error"]
        # A fresh pending estimate is due within the wait for a slot plus the timeout.
        pending = gw.services.executor.mi.pending()
        assert pending["status"] == "pending" and pending["expires_at"] > 5.0
