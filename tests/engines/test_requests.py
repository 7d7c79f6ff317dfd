"""The engine interface's input validation and the scripted double's contract."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from support.scripted_engine import ScriptedEngine

from engines.base import ChatMessage, GenerationRequest, gather_in_order


def test_empty_prompt_is_rejected_naming_messages() -> None:
    with pytest.raises(ValueError, match="messages"):
        GenerationRequest.from_prompt("   ")
    with pytest.raises(ValueError, match="messages"):
        GenerationRequest(messages=())


@pytest.mark.parametrize("max_tokens", [0, -5])
def test_non_positive_max_tokens_is_rejected(max_tokens: int) -> None:
    with pytest.raises(ValidationError) as info:
        GenerationRequest.from_prompt("hi", max_tokens=max_tokens)
    assert info.value.errors()[0]["loc"] == ("max_tokens",)


@pytest.mark.parametrize("schema", [{"type": "no-such-type"}, {"properties": 5}, {}])
def test_invalid_json_schema_is_rejected_naming_the_field(schema: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as info:
        GenerationRequest.from_prompt("hi", json_schema=schema)
    error = info.value.errors()[0]
    assert error["loc"] == ("json_schema",)
    assert "JSON schema" in error["msg"]


def test_valid_schema_and_messages_round_trip() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    request = GenerationRequest.from_prompt("hi", system="be brief", json_schema=schema)
    assert request.messages == (
        ChatMessage(role="system", content="be brief"),
        ChatMessage(role="user", content="hi"),
    )
    assert request.json_schema == schema


def test_unknown_role_and_extra_fields_are_rejected() -> None:
    with pytest.raises(ValidationError):
        ChatMessage(role="robot", content="x")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        GenerationRequest.from_prompt("hi", top_k=5)


async def test_scripted_engine_answers_in_order_with_usage() -> None:
    engine = ScriptedEngine([(r"capital", "Paris"), (r"color", lambda r: "blue sky")])
    requests = [
        GenerationRequest.from_prompt(p, max_tokens=8) for p in ("the capital?", "a color?", "x")
    ]
    results = await engine.generate(requests)
    assert [r.text for r in results] == ["Paris", "blue sky", "ok"]
    assert [r.usage.prompt_tokens for r in results] == [2, 2, 1]
    assert results[1].usage.completion_tokens == 2
    assert engine.batches == [3]


async def test_scripted_engine_truncates_at_max_tokens() -> None:
    engine = ScriptedEngine(default="one two three four")
    result = await engine.generate_one(GenerationRequest.from_prompt("x", max_tokens=2))
    assert result.finish_reason == "length"
    assert result.text == "one two"


async def test_gather_in_order_bounds_concurrency_and_keeps_order() -> None:
    import asyncio

    running = 0
    peak = 0

    async def job(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01 * (5 - i % 5))
        running -= 1
        return i

    assert await gather_in_order([job(i) for i in range(20)], limit=3) == list(range(20))
    assert peak == 3
