"""The OpenAI-compatible front door, driven by the official ``openai`` SDK."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import openai
import pytest
from gateway_helpers import ADMIN_KEY, CODE_DOC, GatedEngine, Gateway, auth, scripted_engines


@pytest.fixture
async def sdk(gw: Gateway) -> AsyncIterator[tuple[Gateway, openai.AsyncOpenAI, str]]:
    key = await gw.new_key()
    transport = httpx.ASGITransport(app=gw.app)
    http = httpx.AsyncClient(transport=transport, base_url="http://gateway/v1")
    client = openai.AsyncOpenAI(
        api_key=key,
        base_url="http://gateway/v1",
        http_client=http,  # type: ignore[arg-type]
        max_retries=0,
    )
    yield gw, client, key
    await client.close()


def messages(question: str = "What is the access code?") -> list[Any]:
    return [{"role": "system", "content": CODE_DOC}, {"role": "user", "content": question}]


async def test_models_lists_the_protocols(sdk: tuple[Gateway, openai.AsyncOpenAI, str]) -> None:
    _, client, _ = sdk
    ids = [model.id async for model in client.models.list()]
    assert ids[:4] == ["minions", "minion", "local", "remote"]
    assert "minions:gpt-4o" in ids


@pytest.mark.parametrize("model", ["minions", "minion", "local", "remote", "minions:gpt-4o"])
async def test_chat_completion_per_model(
    sdk: tuple[Gateway, openai.AsyncOpenAI, str], model: str
) -> None:
    _, client, _ = sdk
    completion = await client.chat.completions.create(model=model, messages=messages())
    assert "4817" in (completion.choices[0].message.content or "")
    assert completion.model == model and completion.object == "chat.completion"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    report = completion.model_extra["minions"]  # type: ignore[index]
    assert report["protocol"] == {"minions:gpt-4o": "minions", "local": "local_only"}.get(
        model, {"remote": "remote_only"}.get(model, model)
    )
    assert "cost_usd" in report and "warnings" in report
    assert report["baseline"]["remote_prompt_tokens"] > 0
    assert {"usd", "savings_factor", "exceeds_context"} <= set(report["baseline"])


async def test_streaming_chat_completion(sdk: tuple[Gateway, openai.AsyncOpenAI, str]) -> None:
    _, client, _ = sdk
    stream = await client.chat.completions.create(
        model="minions",
        messages=messages(),
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert text == "4817" and finish == "stop"
    assert usage is not None and usage.total_tokens > 0


async def test_document_ids_and_a_lone_user_message(
    sdk: tuple[Gateway, openai.AsyncOpenAI, str],
) -> None:
    gw, client, key = sdk
    uploaded = await gw.client.post(
        "/v1/documents",
        files={"file": ("codes.txt", CODE_DOC.encode(), "text/plain")},
        headers=auth(key),
    )
    completion = await client.chat.completions.create(
        model="minions",
        messages=[{"role": "user", "content": "What is the access code?"}],
        extra_body={"document_ids": [uploaded.json()["document_id"]]},
    )
    assert completion.choices[0].message.content == "4817"
    lone = await client.chat.completions.create(
        model="local", messages=[{"role": "user", "content": "The code is 4817. What is it?"}]
    )
    assert "4817" in (lone.choices[0].message.content or "")


async def test_sdk_errors(sdk: tuple[Gateway, openai.AsyncOpenAI, str]) -> None:
    _, client, _ = sdk
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="gpt-17", messages=messages())
    assert missing.value.body["type"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="minions:gpt-unknown", messages=messages())
    with pytest.raises(openai.UnprocessableEntityError):
        await client.chat.completions.create(
            model="minions", messages=[{"role": "assistant", "content": "hi"}]
        )
    bad = openai.AsyncOpenAI(
        api_key="mgw_x_y", base_url="http://gateway/v1", http_client=client._client
    )
    with pytest.raises(openai.AuthenticationError):
        await bad.chat.completions.create(model="minions", messages=messages())


async def test_chat_respects_budgets(gw: Gateway) -> None:
    key = await gw.new_key(budget_usd=0.001)
    body = {"model": "remote", "messages": messages()}
    response = await gw.client.post("/v1/chat/completions", json=body, headers=auth(key))
    assert response.status_code == 402
    # local costs nothing: allowed.
    body["model"] = "local"
    response = await gw.client.post("/v1/chat/completions", json=body, headers=auth(key))
    assert response.status_code == 200
    await gw.services.executor.drain()  # a chat completion is billed just after its reply
    usage = (
        await gw.client.get("/v1/admin/usage", params={"by": "protocol"}, headers=auth(ADMIN_KEY))
    ).json()["data"]
    assert usage["local_only"]["succeeded"] == 1


@pytest.mark.parametrize("stream", [True, False])
async def test_a_client_that_disconnects_aborts_the_work(
    make_server: Callable[..., Any], stream: bool
) -> None:
    engines = scripted_engines()
    remote = engines.remote
    assert isinstance(remote, GatedEngine)
    async with make_server(engines) as (url, app):
        store = app.state.services.store
        async with httpx.AsyncClient(base_url=url) as http:
            created = await http.post(
                "/v1/admin/keys", json={"name": "t", "budget_usd": 5}, headers=auth(ADMIN_KEY)
            )
            key = created.json()["key"]
            body = {"model": "minions", "messages": messages("The code? SLOW"), "stream": stream}
            request = asyncio.create_task(
                http.post("/v1/chat/completions", json=body, headers=auth(key))
            )
            await asyncio.wait_for(remote.started.wait(), 10)
            request.cancel()  # the client goes away mid-task
            with contextlib.suppress(asyncio.CancelledError):
                await request
        # The server notices, cancels the task (and its engine call) and bills what it used.
        key_id = key.split("_")[1]
        for _ in range(250):
            record = await store.api_keys.get(key_id)
            if remote.cancelled and record.reserved_nano == 0:
                break
            await asyncio.sleep(0.02)
        assert remote.cancelled == 1
        assert record.reserved_nano == 0 and record.spent_nano > 0
