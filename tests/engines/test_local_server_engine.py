"""The local-server engine against a real HTTP server on 127.0.0.1 with injected faults: slow is
not stalled, a stall is not re-sent, 429/5xx/dropped connections are retried, cancelling closes
the stream, and no more requests are in flight than the engine allows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from support.openai_server import FaultPlan, build_app, serve_in_thread
from support.scripted_engine import ScriptedEngine, SlowScriptedEngine

from engines.base import GenerationRequest
from engines.errors import (
    EngineCapabilityError,
    EngineError,
    EngineTimeoutError,
    RemoteAPIError,
)
from engines.local_server_engine import LocalServerEngine
from engines.server_probe import probe_server

REPLY = "Paris is the capital of France and its largest city."
REQUEST = GenerationRequest.from_prompt("What is the capital of France?", max_tokens=32)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, FaultPlan]]:
    faults = FaultPlan()
    backend = SlowScriptedEngine(delay_s=0.05, rules=[(r"capital", REPLY)])
    with serve_in_thread(build_app(backend, faults)) as url:
        yield url + "/v1", faults


@pytest.fixture
def faults(server: tuple[str, FaultPlan]) -> Iterator[FaultPlan]:
    plan = server[1]
    plan.reset()
    yield plan
    plan.reset()


def make_engine(url: str, faults: FaultPlan | None = None, **options: object) -> LocalServerEngine:
    """An engine on ``url``; its start-up probe's requests are not counted in ``faults``."""
    options.setdefault("backoff_s", 0.05)
    engine = LocalServerEngine("test-model", base_url=url, **options)  # type: ignore[arg-type]
    if faults is not None:
        faults.reset()
    return engine


async def test_streams_the_answer_with_the_servers_usage(
    server: tuple[str, FaultPlan], faults: FaultPlan
) -> None:
    engine = make_engine(server[0], faults=faults)
    result = await engine.generate_one(REQUEST)
    assert result.text == REPLY
    assert result.finish_reason == "stop"
    assert result.usage.prompt_tokens == 6
    assert result.usage.completion_tokens == len(REPLY.split())
    await engine.aclose()


async def test_no_more_in_flight_than_allowed_and_queue_wait_is_measured(
    server: tuple[str, FaultPlan], faults: FaultPlan
) -> None:
    engine = make_engine(server[0], faults=faults, max_concurrency=2)
    results = await engine.generate([REQUEST] * 8)
    assert [r.text for r in results] == [REPLY] * 8
    assert faults.max_in_flight == 2
    assert engine.stats.max_in_flight == 2
    assert engine.stats.requests == 8
    assert engine.stats.queued_s > 0  # six of them waited for a free slot, on our side
    # Each result carries its own wait: the first two went straight in, the other six waited at
    # least one whole request (the server takes 0.05 s before it answers).
    waits = sorted(result.queued_s for result in results)
    assert max(waits[:2]) < 0.01 and min(waits[2:]) >= 0.05
    assert sum(waits) == pytest.approx(engine.stats.queued_s)
    assert waits[-1] == pytest.approx(engine.stats.max_queued_s)
    await engine.aclose()


async def test_slow_but_steady_is_not_a_stall(
    server: tuple[str, FaultPlan], faults: FaultPlan
) -> None:
    # Ten words, 0.25 s apart: 2.5 s in all, longer than the stall timeout, never quiet for
    # more than a sixth of it (room for a loaded machine).
    engine = make_engine(server[0], faults=faults, stall_timeout_s=1.5)
    faults.push("slow:0.25")
    result = await engine.generate_one(REQUEST)
    assert result.text == REPLY
    assert faults.requests == 1
    await engine.aclose()


async def test_a_stall_mid_stream_times_out_and_is_not_resent(
    server: tuple[str, FaultPlan], faults: FaultPlan
) -> None:
    engine = make_engine(server[0], faults=faults, stall_timeout_s=0.5, max_retries=3)
    faults.push("stall")
    started = time.monotonic()
    with pytest.raises(EngineTimeoutError, match=r"^local: .* stalled: nothing for 0.5 s"):
        await engine.generate_one(REQUEST)
    assert time.monotonic() - started < 10
    assert faults.requests == 1  # re-sending would only repeat the work
    assert engine.stats.stalls == 1
    await engine.aclose()


async def test_the_whole_request_deadline_holds_even_when_tokens_flow(
    server: tuple[str, FaultPlan], faults: FaultPlan
) -> None:
    engine = make_engine(server[0], faults=faults, stall_timeout_s=5, deadline_s=1.0)
    faults.push("slow:0.3")
    with pytest.raises(EngineTimeoutError, match="request deadline"):
        await engine.generate_one(REQUEST)
    assert faults.requests == 1
    await engine.aclose()


async def test_429_with_retry_after_is_honoured(
    server: tuple[str, FaultPlan], faults: FaultPlan
) -> None:
    engine = make_engine(server[0], faults=faults)
    faults.push("429:1")
    started = time.monotonic()
    result = await engine.generate_one(REQUEST)
    assert result.text == REPLY
    assert time.monotonic() - started >= 1.0
    assert faults.requests == 2
    assert engine.stats.retries == 1
    await engine.aclose()


async def test_5xx_is_retried_with_backoff_then_fails_clearly(
    server: tuple[str, FaultPlan], faults: FaultPlan
) -> None:
    engine = make_engine(server[0], faults=faults, max_retries=2)
    faults.push("500", "500", "500", "500")
    with pytest.raises(EngineError, match=r"^local: .*answered 500.*gave up after 2 retries"):
        await engine.generate_one(REQUEST)
    assert faults.requests == 3
    await engine.aclose()


async def test_a_dropped_connection_mid_stream_is_retried(
    server: tuple[str, FaultPlan], faults: FaultPlan
) -> None:
    engine = make_engine(server[0], faults=faults)
    faults.push("drop")
    result = await engine.generate_one(REQUEST)
    assert result.text == REPLY
    assert faults.requests == 2
    await engine.aclose()


@pytest.mark.parametrize(
    ("fault", "message"),
    [("401", "local_api_key: rejected"), ("404", "local_model: 'test-model' not found")],
)
async def test_client_errors_are_not_retried_and_say_local(
    server: tuple[str, FaultPlan], faults: FaultPlan, fault: str, message: str
) -> None:
    engine = make_engine(server[0], faults=faults)
    faults.push(fault)
    with pytest.raises(RemoteAPIError, match=message):
        await engine.generate_one(REQUEST)
    assert faults.requests == 1
    await engine.aclose()


async def test_one_failed_request_fails_only_itself(
    server: tuple[str, FaultPlan], faults: FaultPlan
) -> None:
    engine = make_engine(
        server[0], faults=faults, max_concurrency=1
    )  # one at a time: faults in order
    faults.push("ok", "400", "ok")
    outcomes = await engine.generate_settled([REQUEST] * 3)
    assert [o.text if not isinstance(o, Exception) else "error" for o in outcomes] == [
        REPLY,
        "error",
        REPLY,
    ]
    assert "local: " in str(outcomes[1]) and "answered 400" in str(outcomes[1])
    # The failed request had waited for the first one (0.05 s at least): its error says so.
    assert isinstance(outcomes[1], EngineError) and outcomes[1].queued_s >= 0.05
    await engine.aclose()


async def test_cancelling_closes_the_stream(
    server: tuple[str, FaultPlan], faults: FaultPlan
) -> None:
    engine = make_engine(server[0], faults=faults, stall_timeout_s=60)
    faults.push("stall")
    call = asyncio.create_task(engine.generate_one(REQUEST))
    deadline = time.monotonic() + 10
    while faults.in_flight == 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    deadline = time.monotonic() + 5.0  # (the real llama.cpp test holds it to a second)
    while faults.disconnects == 0:  # the server saw its client go
        assert time.monotonic() < deadline, "the server never saw the stream closed"
        await asyncio.sleep(0.02)
    assert engine.stats.cancelled == 1 and engine.stats.in_flight == 0
    await engine.aclose()


async def test_unreachable_server_starts_with_defaults_and_fails_clearly() -> None:
    engine = make_engine("http://127.0.0.1:9/v1", max_retries=1)
    assert any("cannot reach" in warning for warning in engine.warnings)
    assert engine.max_concurrency == 1
    with pytest.raises(EngineError, match=r"^local: lost the connection to http://127.0.0.1:9"):
        await engine.generate_one(REQUEST)
    await engine.aclose()


async def test_a_generic_server_gets_safe_token_estimates_with_a_warning(
    server: tuple[str, FaultPlan], faults: FaultPlan
) -> None:
    engine = make_engine(server[0], faults=faults)
    assert engine.info is not None and engine.info.family == "openai-compatible"
    assert engine.token_source == "estimate"
    assert any("estimated" in warning for warning in engine.warnings)
    text = "x" * 300
    assert engine.count_tokens(text) == 100  # three characters a token: errs long
    await engine.aclose()


async def test_a_server_without_json_schemas_falls_back_to_the_prompt_clearly() -> None:
    faults = FaultPlan()
    faults.reject_schemas = True
    with serve_in_thread(build_app(ScriptedEngine(default="{}"), faults)) as url:
        info = probe_server(url + "/v1", model="test-model")
        assert info.structured == "none"
        engine = make_engine(url + "/v1", info=info)
        assert engine.supports_json_schema is False
        assert any("does not accept JSON schemas" in w for w in engine.warnings)
        schema = {"type": "object"}
        result = await engine.generate_one(
            GenerationRequest.from_prompt("reply", json_schema=schema, max_tokens=8)
        )
        assert result.text == "{}"  # sent without response_format, so not rejected
        await engine.aclose()


async def test_scores_through_a_server_that_returns_prompt_logprobs() -> None:
    backend = ScriptedEngine(default="ok", context_window=4096)
    with serve_in_thread(build_app(backend, FaultPlan(), like_vllm=True)) as url:
        engine = make_engine(url + "/v1")
        assert engine.info is not None and engine.info.family == "vllm"
        assert engine.supports_score is True and engine.token_source == "server"
        assert engine.context_window == 4096 and engine.max_concurrency == 64
        prefix, continuations = "the access code is 4817", ["4817", "blue sky"]
        scores = await engine.score(prefix, continuations)
        # The same numbers as the in-process scorer's rule, per token.
        assert scores == pytest.approx(await backend.score(prefix, continuations), abs=1e-9)
        await engine.aclose()


async def test_a_server_without_prompt_logprobs_says_it_cannot_score(
    server: tuple[str, FaultPlan], faults: FaultPlan
) -> None:
    engine = make_engine(server[0], faults=faults)
    assert engine.supports_score is False
    with pytest.raises(EngineCapabilityError, match="cannot return the log-probabilities"):
        await engine.score("prefix", ["x"])
    await engine.aclose()
