"""Billing that a provider cannot bypass, against a real OpenAI-compatible HTTP server that lies:
one renames its model in every reply (priced 0 before: budgets bypassed), one over-reports usage
(billed beyond the reservation with no signal before)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from gateway_helpers import ADMIN_KEY, CODE_DOC, auth
from support.openai_server import FaultPlan, build_app, serve_in_thread
from support.scripted_engine import ScriptedEngine

from engines.openai_engine import OpenAIEngine
from service.engines import EngineSet
from service.store.api_keys import key_id_of

pytestmark = pytest.mark.timeout(60)


async def key_state(gw: Any, key: str) -> dict[str, Any]:
    keys = (await gw.client.get("/v1/admin/keys", headers=auth(ADMIN_KEY))).json()["data"]
    (found,) = [k for k in keys if k["id"] == key_id_of(key)]
    return dict(found)


def engines_behind(url: str) -> EngineSet:
    local = ScriptedEngine(default="NONE", model="smollm2-135m-instruct", context_window=8192)
    remote = OpenAIEngine("gpt-4o", base_url=f"{url}/v1", api_key="k", context_window=4000)
    return EngineSet(local=local, remote=remote, remote_stand_in=False)


TASK = {
    "protocol": "remote_only",
    "question": "What is the access code?",
    "documents": [{"text": CODE_DOC}],
    "options": {"remote_max_tokens": 64},
}


async def test_a_renamed_model_is_priced_as_the_model_asked_for(
    make_gateway: Callable[..., Any],
) -> None:
    fake = build_app(ScriptedEngine(default="4817"), FaultPlan(), reply_model="my-deployment-1")
    with serve_in_thread(fake) as url:
        async with make_gateway(engines=engines_behind(url)) as gw:
            key = await gw.new_key(budget_usd=1.0)
            posted = await gw.client.post("/v1/tasks", json=TASK, headers=auth(key))
            assert posted.status_code == 202, posted.text
            view = await gw.wait_for(posted.json()["id"], key)
            assert view["status"] == "succeeded", view
            cost = view["result"]["cost_usd"]
            assert cost["remote"] > 0 and cost["remote_priced"] is True
            call = view["result"]["usage"]["remote_calls"][0]
            assert call["model"] == "gpt-4o" and call["reply_model"] == "my-deployment-1"
            tokens = call["usage"]
            assert call["cost_usd"] == pytest.approx(
                tokens["prompt_tokens"] * 2.5e-6 + tokens["completion_tokens"] * 10e-6
            )
            assert any("my-deployment-1" in w for w in view["result"]["warnings"])
            assert view["billing"]["reply_models"] == ["my-deployment-1"]
            assert view["billing"]["billed_usd"] == pytest.approx(cost["remote"], abs=1e-9)
            assert (await key_state(gw, key))["spent_usd"] == pytest.approx(
                cost["remote"], abs=1e-9
            )


async def test_usage_beyond_the_reservation_is_billed_flagged_and_refuses_the_next_task(
    make_gateway: Callable[..., Any],
) -> None:
    fake = build_app(ScriptedEngine(default="4817"), FaultPlan(), reported_prompt_tokens=1_000_000)
    with serve_in_thread(fake) as url:
        async with make_gateway(engines=engines_behind(url)) as gw:
            key = await gw.new_key(budget_usd=0.10)
            posted = await gw.client.post("/v1/tasks", json=TASK, headers=auth(key))
            assert posted.status_code == 202, posted.text
            view = await gw.wait_for(posted.json()["id"], key)
            truth = 1_000_000 * 2.5e-6  # what the provider reported, at gpt-4o's price
            assert view["billing"]["budget_overrun"] is True
            assert view["billing"]["billed_usd"] >= truth
            assert view["warnings"] and view["warnings"][0].startswith("budget_overrun")
            assert (await key_state(gw, key))["spent_usd"] >= truth > 0.10  # the truth, over budget
            metrics = (await gw.client.get("/metrics", headers=auth(key))).text
            assert 'mgw_budget_overruns_total{protocol="remote_only"} 1.0' in metrics
            again = await gw.client.post("/v1/tasks", json=TASK, headers=auth(key))
            assert again.status_code == 402, again.text
            assert again.json()["error"]["type"] == "budget_exceeded"
