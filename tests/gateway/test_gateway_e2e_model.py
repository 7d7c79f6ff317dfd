"""End to end: the real server (uvicorn on 127.0.0.1, random port) with the real bundled model
(standing in for the remote too), one ``minions`` task through the ``openai`` SDK and one through
``/v1/tasks`` followed by Server-Sent Events. Kept short: one round, short replies, a small
document."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from gateway_helpers import ADMIN_KEY, auth

from service.engines import EngineSet

pytestmark = pytest.mark.model

DOCUMENT = (
    "Harbor Logistics quarterly memo.\f"
    "The access code for the north warehouse is 4817. Deliveries arrive on Tuesdays.\f"
    "The cafeteria serves lunch at noon."
)
QUESTION = "What is the access code for the north warehouse?"
OPTIONS: dict[str, Any] = {
    "max_rounds": 1,
    "max_tasks_per_round": 1,
    "remote_max_tokens": 96,
    "local_max_tokens": 48,
    "job_max_tokens": 64,
    "json_retries": 0,
    "chunking": "pages",
}


async def test_minions_through_the_openai_sdk_and_through_tasks_with_sse(
    local_engine: Any, make_server: Callable[..., Any]
) -> None:
    engines = EngineSet(local=local_engine, remote=local_engine, remote_stand_in=True)
    async with make_server(engines) as (url, _app):
        client = openai.AsyncOpenAI(api_key=ADMIN_KEY, base_url=f"{url}/v1", max_retries=0)
        models = [model.id async for model in client.models.list()]
        assert "minions" in models
        completion = await client.chat.completions.create(
            model="minions",
            messages=[
                {"role": "system", "content": DOCUMENT},
                {"role": "user", "content": QUESTION},
            ],
            extra_body={"minions_options": OPTIONS},
        )
        await client.close()
        assert completion.choices[0].message.content
        assert completion.usage is not None and completion.usage.total_tokens > 0
        report = completion.model_extra["minions"]  # type: ignore[index]
        assert report["protocol"] == "minions" and report["remote_stand_in"] is True
        assert report["cost_usd"]["total"] == 0

        async with httpx.AsyncClient(base_url=url, timeout=300) as http:
            body = {
                "protocol": "minions",
                "question": QUESTION,
                "documents": [{"text": DOCUMENT, "name": "memo.txt"}],
                "options": OPTIONS,
            }
            submitted = await http.post("/v1/tasks", json=body, headers=auth(ADMIN_KEY))
            assert submitted.status_code == 202, submitted.text
            task_id = submitted.json()["id"]
            events: list[tuple[str, dict[str, Any]]] = []
            async with http.stream(
                "GET", f"/v1/tasks/{task_id}/events", headers=auth(ADMIN_KEY)
            ) as stream:
                event_type = ""
                async for line in stream.aiter_lines():
                    if line.startswith("event:"):
                        event_type = line.split(":", 1)[1].strip()
                    elif line.startswith("data:"):
                        events.append((event_type, json.loads(line.split(":", 1)[1])))
            types = [event_type for event_type, _ in events]
            # The remote-only baseline is known before the first round starts.
            assert types[:2] == ["baseline", "round_started"] and types[-1] == "final", types
            assert events[0][1]["remote_prompt_tokens"] > 0
            assert "plan" in types and "remote_call" in types
            task = (await http.get(f"/v1/tasks/{task_id}", headers=auth(ADMIN_KEY))).json()
            assert task["status"] == "succeeded"
            assert task["result"]["answer"] == events[-1][1]["answer"]
            assert task["result"]["usage"]["local"]["total_tokens"] > 0
            # Then, in the background, I(X;Z) of what crossed, scored by the real local engine
            # (vLLM prompt log-probs); "skipped" only when every local job came back empty.
            for _ in range(600):
                mi = task["mi"]
                if mi and mi["status"] != "pending":
                    break
                await asyncio.sleep(0.5)
                task = (await http.get(f"/v1/tasks/{task_id}", headers=auth(ADMIN_KEY))).json()
            assert mi["status"] in ("succeeded", "skipped"), mi
            if mi["status"] == "succeeded":
                assert mi["scorer_model"] == local_engine.model and mi["n_contexts"] >= 3
                assert mi["mi_nats"] <= mi["upper_bound_nats"] + 1e-9
                assert mi["bits_per_token"] is not None
