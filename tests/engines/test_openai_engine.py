"""The OpenAI adapter against a real HTTP server on 127.0.0.1, with injected faults."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from support.openai_server import FaultPlan, build_app, serve_in_thread
from support.scripted_engine import ScriptedEngine

from engines.base import GenerationRequest
from engines.errors import EngineCapabilityError, EngineTimeoutError, RemoteAPIError
from engines.openai_engine import OpenAIEngine

REQUEST = GenerationRequest.from_prompt("What is the capital of France?", max_tokens=16)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, FaultPlan]]:
    faults = FaultPlan()
    backend = ScriptedEngine([(r"capital", "Paris is the capital.")])
    with serve_in_thread(build_app(backend, faults)) as url:
        yield url + "/v1", faults


@pytest.fixture
def faults(server: tuple[str, FaultPlan]) -> Iterator[FaultPlan]:
    plan = server[1]
    plan.queue.clear()
    plan.requests = 0
    yield plan
    plan.queue.clear()


def make_engine(url: str, **options: object) -> OpenAIEngine:
    return OpenAIEngine("test-model", base_url=url, api_key="k", **options)  # type: ignore[arg-type]


async def test_answers_with_usage(server: tuple[str, FaultPlan], faults: FaultPlan) -> None:
    engine = make_engine(server[0])
    result = await engine.generate_one(REQUEST)
    assert result.text == "Paris is the capital."
    assert result.usage.prompt_tokens == 6  # "What is the capital of France?"
    assert result.usage.completion_tokens == 4
    assert result.finish_reason == "stop"
    await engine.aclose()


async def test_batch_keeps_order(server: tuple[str, FaultPlan], faults: FaultPlan) -> None:
    engine = make_engine(server[0])
    prompts = ["capital?", "other", "capital again", "x"]
    results = await engine.generate([GenerationRequest.from_prompt(p) for p in prompts])
    assert [r.text for r in results] == [
        "Paris is the capital.",
        "ok",
        "Paris is the capital.",
        "ok",
    ]
    await engine.aclose()


async def test_429_then_200_is_retried(server: tuple[str, FaultPlan], faults: FaultPlan) -> None:
    faults.push("429", "429")
    engine = make_engine(server[0], max_retries=3)
    result = await engine.generate_one(REQUEST)
    assert result.text == "Paris is the capital."
    assert faults.requests == 3
    await engine.aclose()


async def test_500_three_times_gives_clear_error(
    server: tuple[str, FaultPlan], faults: FaultPlan
) -> None:
    faults.push("500", "500", "500")
    engine = make_engine(server[0], max_retries=2)
    with pytest.raises(RemoteAPIError, match="answered 500") as info:
        await engine.generate_one(REQUEST)
    assert info.value.status_code == 500
    assert faults.requests == 3
    await engine.aclose()


async def test_hang_times_out(server: tuple[str, FaultPlan], faults: FaultPlan) -> None:
    faults.push("hang")
    engine = make_engine(server[0], timeout_s=0.5, max_retries=0)
    started = time.monotonic()
    with pytest.raises(EngineTimeoutError, match="did not answer in time"):
        await engine.generate_one(REQUEST)
    assert time.monotonic() - started < 5
    await engine.aclose()


async def test_malformed_json_gives_clear_error(
    server: tuple[str, FaultPlan], faults: FaultPlan
) -> None:
    faults.push("malformed")
    engine = make_engine(server[0], max_retries=0)
    with pytest.raises(RemoteAPIError, match="malformed response"):
        await engine.generate_one(REQUEST)
    await engine.aclose()


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("401", "remote_api_key: rejected"),
        ("404", "remote_model: 'test-model' not found"),
        ("400", "answered 400"),
    ],
)
async def test_client_errors_are_not_retried_and_are_clear(
    server: tuple[str, FaultPlan], faults: FaultPlan, fault: str, message: str
) -> None:
    faults.push(fault)
    engine = make_engine(server[0], max_retries=3)
    with pytest.raises(RemoteAPIError, match=message):
        await engine.generate_one(REQUEST)
    assert faults.requests == 1
    await engine.aclose()


async def test_unreachable_server_is_a_clear_error() -> None:
    engine = make_engine("http://127.0.0.1:9/v1", max_retries=0, timeout_s=2)
    with pytest.raises(Exception, match="cannot reach"):
        await engine.generate_one(REQUEST)
    await engine.aclose()


async def test_score_is_refused_clearly() -> None:
    engine = make_engine("http://127.0.0.1:9/v1")
    with pytest.raises(EngineCapabilityError, match="score"):
        await engine.score("prefix", ["x"])
    await engine.aclose()
