"""The in-process vLLM adapter on the real bundled model (loaded once per session)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from engines.base import GenerationRequest
from engines.errors import EngineConfigError

pytestmark = pytest.mark.model


async def test_greedy_generation_is_deterministic(local_engine: Any) -> None:
    request = GenerationRequest.from_prompt("Name three colors.", max_tokens=24, temperature=0.0)
    first = await local_engine.generate_one(request)
    second = await local_engine.generate_one(request)
    assert first.text == second.text
    assert first.text.strip()
    assert first.usage.prompt_tokens > 5
    assert 0 < first.usage.completion_tokens <= 24


async def test_json_schema_output_validates(local_engine: Any) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    request = GenerationRequest.from_prompt(
        "Give a city and its population as JSON.", max_tokens=64, json_schema=schema
    )
    result = await local_engine.generate_one(request)
    assert result.finish_reason == "stop"
    jsonschema.validate(json.loads(result.text), schema)


async def test_batch_of_eight_returns_eight_in_order(local_engine: Any) -> None:
    numbers = list(range(1, 9))
    requests = [
        GenerationRequest.from_prompt(f"Repeat exactly: {n}{n}{n}", max_tokens=12) for n in numbers
    ]
    batch = await local_engine.generate(requests)
    assert len(batch) == 8
    singles = [await local_engine.generate_one(r) for r in requests[:3]]
    # Greedy decoding: the batched answers are the same as one-at-a-time ones, so order is kept.
    assert [r.text for r in batch[:3]] == [r.text for r in singles]
    assert all(r.usage.prompt_tokens > 0 for r in batch)


async def test_max_tokens_truncates_with_length(local_engine: Any) -> None:
    result = await local_engine.generate_one(
        GenerationRequest.from_prompt("Write a long story about a dragon.", max_tokens=5)
    )
    assert result.finish_reason == "length"
    assert result.usage.completion_tokens == 5


async def test_count_tokens_matches_tokenizer(local_engine: Any, model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    text = "Minions: cost-efficient collaboration between local and remote models."
    assert local_engine.count_tokens(text) == len(tokenizer.encode(text, add_special_tokens=False))


async def test_score_matches_transformers_teacher_forcing(
    local_engine: Any, model_dir: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prefix = (
        "Document: The launch code of the station is 7341.\n"
        "Question: What is the launch code?\nAnswer:"
    )
    continuations = [" The launch code is 7341.", " Bananas are yellow.", " 7341"]
    scores = await local_engine.score(prefix, continuations)

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    prefix_ids = tokenizer.encode(prefix, add_special_tokens=False)
    for continuation, score in zip(continuations, scores, strict=True):
        ids = tokenizer.encode(continuation, add_special_tokens=False)
        full = torch.tensor([prefix_ids + ids])
        with torch.no_grad():
            logits = model(full).logits[0].double()
        logprobs = torch.log_softmax(logits, dim=-1)
        expected = sum(
            logprobs[len(prefix_ids) + i - 1, token].item() for i, token in enumerate(ids)
        )
        assert abs(score - expected) / len(ids) < 0.05, (continuation, score, expected)
    # The true fact is far likelier than an unrelated sentence.
    assert scores[0] > scores[1] + 5


async def test_score_rejects_empty_continuation(local_engine: Any) -> None:
    with pytest.raises(ValueError, match=r"continuations\[1\]"):
        await local_engine.score("prefix", ["ok", ""])


async def test_prompt_longer_than_context_is_a_clear_error(local_engine: Any) -> None:
    long_prompt = "word " * 9000
    with pytest.raises(ValueError, match="context"):
        await local_engine.generate_one(GenerationRequest.from_prompt(long_prompt, max_tokens=4))


def test_unknown_model_is_a_config_error(tmp_path: Path) -> None:
    from engines.vllm_engine import VLLMEngine

    with pytest.raises(EngineConfigError, match="local_model"):
        VLLMEngine.start(str(tmp_path / "no-such-model"))
