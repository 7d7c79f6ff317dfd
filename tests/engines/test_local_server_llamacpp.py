"""The local-server engine against a real llama.cpp server (xllamacpp, 2 slots) serving the
bundled GGUF: what it detects, exact token counts, never more requests than slots, cancellation
that stops the server's decoding."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from support.llama_server import LlamaServer, llama_server

from engines.base import GenerationRequest
from engines.errors import EngineCapabilityError
from engines.local_server_engine import LocalServerEngine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaServer]:
    with llama_server(slots=2, ctx_per_slot=2048) as running:
        yield running


@pytest.fixture
async def engine(server: LlamaServer) -> AsyncIterator[LocalServerEngine]:
    local = LocalServerEngine("smollm2-135m-instruct", base_url=server.url + "/v1")
    yield local
    await local.aclose()


async def test_detects_the_servers_slots_window_tokenizer_and_schemas(
    engine: LocalServerEngine,
) -> None:
    assert engine.info is not None and engine.info.family == "llama.cpp"
    assert engine.max_concurrency == 2
    assert engine.context_window == 2048  # per slot, not the 4096 llama.cpp was given in all
    assert engine.token_source == "server"
    assert engine.supports_json_schema is True
    assert engine.warnings == []


@pytest.mark.parametrize(
    "text",
    [
        "Hello world",
        "The 3 quick brown foxes jumped over 12 lazy dogs; naïve café, 東京.",
        "def f(x):\n    return x ** 2  # squares\n" * 5,
    ],
)
async def test_token_counts_equal_the_servers_own(
    engine: LocalServerEngine, server: LlamaServer, text: str
) -> None:
    assert engine.count_tokens(text) == len(server.tokenize(text))


async def test_never_more_in_flight_than_the_server_has_slots(
    engine: LocalServerEngine, server: LlamaServer
) -> None:
    seen = {"busy": 0, "deferred": 0.0}
    done = threading.Event()

    def watch() -> None:  # the server's own view, from outside the client
        while not done.is_set():
            seen["busy"] = max(seen["busy"], server.busy_slots())
            deferred = server.metrics().get("requests_deferred", 0.0)
            seen["deferred"] = max(seen["deferred"], deferred)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    prompts = [f"Name {n} fruits, one per line." for n in range(2, 8)]
    try:
        results = await engine.generate(
            [GenerationRequest.from_prompt(p, max_tokens=24) for p in prompts]
        )
    finally:
        done.set()
        watcher.join(timeout=5)
    assert len(results) == 6 and all(r.usage.completion_tokens > 0 for r in results)
    assert engine.stats.max_in_flight == 2
    assert seen["busy"] <= 2
    assert seen["deferred"] == 0  # the server never had to queue a request of ours
    # The queueing happened on our side instead, and each result says how long it waited: two
    # went straight to a slot, four waited for one to finish (a 24-token reply at least).
    waits = sorted(result.queued_s for result in results)
    assert max(waits[:2]) < 0.01 and min(waits[2:]) > 0.05
    assert sum(waits) == pytest.approx(engine.stats.queued_s)


async def test_mutual_information_is_refused_clearly(engine: LocalServerEngine) -> None:
    assert engine.supports_score is False
    with pytest.raises(EngineCapabilityError, match=r"llama.cpp at .* cannot return"):
        await engine.score("The cat sat", [" on the mat"])


async def test_prompt_usage_is_the_servers_count(engine: LocalServerEngine) -> None:
    request = GenerationRequest.from_prompt("Say yes.", max_tokens=4)
    result = await engine.generate_one(request)
    # The chat template wraps the prompt, so the server counts more than the bare text...
    assert result.usage.prompt_tokens > engine.count_tokens("Say yes.")
    assert 1 <= result.usage.completion_tokens <= 4


async def test_json_schema_is_enforced_by_the_server(engine: LocalServerEngine) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    }
    result = await engine.generate_one(
        GenerationRequest.from_prompt(
            "What is the capital of France?", json_schema=schema, max_tokens=32
        )
    )
    assert set(json.loads(result.text)) == {"city"}


async def test_cancelling_stops_the_servers_decoding_within_a_second(
    engine: LocalServerEngine, server: LlamaServer
) -> None:
    before = server.metrics()["tokens_predicted_total"]
    request = GenerationRequest.from_prompt(
        "Write a very long story about a lighthouse keeper, chapter by chapter.",
        max_tokens=1500,
        temperature=0.8,
        seed=1,
    )
    call = asyncio.create_task(engine.generate_one(request))
    deadline = time.monotonic() + 60
    while server.busy_slots() == 0:
        assert time.monotonic() < deadline and not call.done()
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # well into decoding
    assert server.busy_slots() == 1 and not call.done()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    cancelled_at = time.monotonic()
    while server.busy_slots():
        assert time.monotonic() - cancelled_at < 1.0, "the server is still decoding"
        await asyncio.sleep(0.02)
    stopped = server.metrics()["tokens_predicted_total"]
    await asyncio.sleep(0.5)
    assert server.metrics()["tokens_predicted_total"] == stopped
    assert stopped < before + 1500


def test_doctor_reports_what_the_llama_cpp_server_is(server: LlamaServer) -> None:
    env = {
        **os.environ,
        "MGW_LOCAL_ENGINE": "openai",
        "MGW_LOCAL_BASE_URL": server.url + "/v1",
        "MGW_LOCAL_MODEL": "smollm2-135m-instruct",
    }
    result = subprocess.run(
        [sys.executable, "-m", "cli", "doctor", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    local = json.loads(result.stdout)[0]
    assert local["server"]["family"] == "llama.cpp"
    assert (local["server"]["slots"], local["concurrency"], local["context_window"]) == (
        2,
        2,
        2048,
    )
    assert local["tokenizer"] == "server (/tokenize, llama.cpp)"
    assert local["server"]["structured_outputs"] == "response_format"
    assert local["server"]["prompt_logprobs"] is False
    assert local["latency_1_token_s"] > 0 and local["problems"] == []
