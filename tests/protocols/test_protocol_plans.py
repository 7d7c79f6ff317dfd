"""Job-plan schemas and JSON parsing: the remote's plans are bounded data, never code."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError
from support.scripted_engine import ScriptedEngine

from engines.base import ChatMessage
from engines.prices import PriceTable
from protocols.accounting import Events, Recorder
from protocols.plans import (
    AggregateDecision,
    ChatDecision,
    FinalAggregateDecision,
    JobOutput,
    JobPlan,
    KeywordSelection,
    job_output_schema,
    job_plan_schema,
)
from protocols.structured import JSONParseError, ask_json, extract_json_object, salvage_answer

CONTEXT = {"chunk_count": 20, "max_tasks": 8}


def test_a_valid_plan_with_every_selection_kind() -> None:
    plan = JobPlan.model_validate(
        {
            "tasks": [
                {"task": "find the date", "advice": "look at headers", "chunks": "all"},
                {"task": "find the total", "advice": "", "chunks": [3, 4, 3]},
                {"task": "find the code", "chunks": {"keywords": ["code"], "top_k": 2}},
            ]
        },
        context=CONTEXT,
    )
    assert plan.tasks[1].chunks == [3, 4]
    assert isinstance(plan.tasks[2].chunks, KeywordSelection)


def test_a_plan_with_ten_thousand_tasks_is_rejected() -> None:
    tasks = [{"task": f"task {i}", "advice": "", "chunks": "all"} for i in range(10_000)]
    with pytest.raises(ValidationError, match="at most 32"):
        JobPlan.model_validate({"tasks": tasks}, context=CONTEXT)


def test_more_tasks_than_k_are_rejected() -> None:
    tasks = [{"task": f"task {i}", "chunks": "all"} for i in range(9)]
    with pytest.raises(ValidationError, match="at most 8 are allowed"):
        JobPlan.model_validate({"tasks": tasks}, context=CONTEXT)


def test_a_chunk_id_out_of_range_is_rejected() -> None:
    with pytest.raises(ValidationError, match="chunk id 20 is out of range"):
        JobPlan.model_validate({"tasks": [{"task": "t", "chunks": [1, 20]}]}, context=CONTEXT)
    with pytest.raises(ValidationError):
        JobPlan.model_validate({"tasks": [{"task": "t", "chunks": [-1]}]}, context=CONTEXT)


@pytest.mark.parametrize(
    "bad_task",
    [
        {"task": "t", "chunks": "all", "code": "import os; os.system('rm -rf /')"},
        {"task": "t", "chunks": "some"},
        {"task": "", "chunks": "all"},
        {"task": "x" * 1001, "chunks": "all"},
        {"task": "t", "chunks": {"keywords": [], "top_k": 2}},
        {"task": "t", "chunks": {"keywords": ["k"], "top_k": 1000}},
        {"task": "t", "chunks": {"keywords": ["k"], "python": "print(1)"}},
    ],
)
def test_malformed_tasks_are_rejected(bad_task: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        JobPlan.model_validate({"tasks": [bad_task]}, context=CONTEXT)


def test_an_empty_plan_is_rejected() -> None:
    with pytest.raises(ValidationError):
        JobPlan.model_validate({"tasks": []}, context=CONTEXT)


def test_the_default_plan_is_the_question_over_all_chunks() -> None:
    plan = JobPlan.default("What is the code?")
    assert [(t.task, t.chunks) for t in plan.tasks] == [("What is the code?", "all")]


def test_decisions_need_their_payload() -> None:
    with pytest.raises(ValidationError, match="answer"):
        AggregateDecision.model_validate({"decision": "final_answer", "scratchpad": ""})
    with pytest.raises(ValidationError, match="message"):
        ChatDecision.model_validate({"decision": "request_more"})
    with pytest.raises(ValidationError):
        FinalAggregateDecision.model_validate({"decision": "request_more", "scratchpad": "s"})


def test_job_output_answer_none_means_nothing_found() -> None:
    assert not JobOutput.model_validate({"explanation": "", "answer": None}).has_answer
    assert not JobOutput.model_validate({"explanation": "", "answer": "None."}).has_answer
    assert JobOutput.model_validate({"explanation": "", "answer": "4817"}).has_answer


def test_schemas_are_valid_structured_output_constraints() -> None:
    import jsonschema

    for model in (JobPlan, JobOutput, AggregateDecision, FinalAggregateDecision, ChatDecision):
        jsonschema.Draft202012Validator.check_schema(model.model_json_schema())
    jsonschema.Draft202012Validator.check_schema(job_output_schema(64))
    jsonschema.Draft202012Validator.check_schema(job_plan_schema(4, 20))


def test_the_plan_schema_encodes_k_and_the_chunk_range() -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(job_plan_schema(2, 20))
    assert validator.is_valid({"tasks": [{"task": "t", "chunks": [0, 19]}]})
    assert not validator.is_valid({"tasks": [{"task": "t", "chunks": [20]}]})
    assert not validator.is_valid({"tasks": [{"task": "t"}] * 3})
    assert not validator.is_valid({"tasks": [{"task": "t", "code": "x"}]})


def test_job_schema_fits_its_token_budget() -> None:
    def limits(schema: dict[str, Any]) -> int:
        total = 0
        for field in schema["properties"].values():
            for variant in field.get("anyOf", [field]):
                total += variant.get("maxLength", 0)
        return total

    assert limits(job_output_schema(128)) <= (128 - 24) * 3
    assert limits(job_output_schema(256)) > limits(job_output_schema(128))


def _largest_plan(schema: dict[str, Any], chunk_count: int) -> list[dict[str, Any]]:
    """The longest plans the schema lets a model write, one per chunk-selection kind."""
    planned = schema["$defs"]["PlannedTask"]["properties"]
    ids = next(v for v in planned["chunks"]["anyOf"] if v.get("type") == "array")
    keywords = schema["$defs"]["KeywordSelection"]["properties"]["keywords"]
    selections: list[Any] = [
        "all",
        [chunk_count - 1] * ids["maxItems"],
        {"keywords": ["k" * keywords["items"]["maxLength"]] * keywords["maxItems"], "top_k": 64},
    ]
    count = schema["properties"]["tasks"]["maxItems"]
    return [
        {
            "tasks": [
                {
                    "task": "t" * planned["task"]["maxLength"],
                    "advice": "a" * planned["advice"]["maxLength"],
                    "chunks": selection,
                }
            ]
            * count
        }
        for selection in selections
    ]


@pytest.mark.parametrize(
    ("max_tasks", "chunk_count", "max_tokens"),
    [(8, 40, 256), (8, 500, 1024), (32, 3, 4096), (4, 1, 64)],
)
def test_plan_schema_fits_its_token_budget(
    max_tasks: int, chunk_count: int, max_tokens: int
) -> None:
    import jsonschema

    schema = job_plan_schema(max_tasks, chunk_count, max_tokens)
    validator = jsonschema.Draft202012Validator(schema)
    for plan in _largest_plan(schema, chunk_count):
        assert validator.is_valid(plan)
        # At ~3 characters a token (the rate job outputs are sized with), the longest plan
        # still fits max_tokens, so it is never cut off into invalid JSON.
        assert len(json.dumps(plan)) / 3 <= max_tokens, (plan, max_tokens)
    assert 1 <= schema["properties"]["tasks"]["maxItems"] <= max_tasks
    bigger = job_plan_schema(max_tasks, chunk_count, max_tokens * 4)
    assert (
        bigger["$defs"]["PlannedTask"]["properties"]["task"]["maxLength"]
        >= (schema["$defs"]["PlannedTask"]["properties"]["task"]["maxLength"])
    )


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1}',
        '```json\n{"a": 1}\n```',
        'Sure! Here is the JSON:\n{"a": 1}\nHope it helps.',
        'noise {not json} then {"a": 1} and {"b": 2}',
    ],
)
def test_extract_json_object_finds_the_first_object(text: str) -> None:
    assert extract_json_object(text) == {"a": 1}


def test_extract_json_object_fails_clearly() -> None:
    with pytest.raises(JSONParseError):
        extract_json_object("no json here [1, 2]")


def test_salvage_answer_prefers_the_answer_field() -> None:
    assert salvage_answer('{"decision": "maybe", "answer": "42"}') == "42"
    assert salvage_answer("  plain words ") == "plain words"


async def test_ask_json_retries_with_the_error_then_gives_up() -> None:
    engine = ScriptedEngine(default="not json at all")
    recorder = Recorder(engine, engine, PriceTable.default(), Events(None))
    reply = await ask_json(
        recorder,
        "remote",
        "decompose",
        [ChatMessage(role="user", content="plan please")],
        JobPlan,
        round=1,
        max_tokens=64,
        retries=3,
        context=CONTEXT,
    )
    assert reply.value is None and reply.attempts == 4 and len(engine.calls) == 4
    retry_prompt = engine.calls[1].messages[-1].content
    assert "no JSON object" in retry_prompt
    assert engine.calls[0].json_schema == JobPlan.model_json_schema()


async def test_ask_json_fixes_itself_from_the_error() -> None:
    good = json.dumps({"tasks": [{"task": "t", "chunks": [1]}]})
    bad = json.dumps({"tasks": [{"task": "t", "chunks": [99]}]})
    engine = ScriptedEngine([(r"out of range", good)], default=bad)
    recorder = Recorder(engine, engine, PriceTable.default(), Events(None))
    reply = await ask_json(
        recorder,
        "remote",
        "decompose",
        [ChatMessage(role="user", content="plan please")],
        JobPlan,
        round=1,
        max_tokens=64,
        retries=3,
        context=CONTEXT,
    )
    assert reply.value is not None and reply.value.tasks[0].chunks == [1]
    assert reply.attempts == 2
    assert "chunk id 99 is out of range" in reply.errors[0]


async def test_ask_json_parses_fenced_replies_without_structured_output() -> None:
    # An engine without structured output: replies are parsed leniently instead.
    PlainEngine = type("PlainEngine", (ScriptedEngine,), {"supports_json_schema": False})
    engine = PlainEngine(default='```json\n{"decision": "final_answer", "answer": "x"}\n```')
    recorder = Recorder(engine, engine, PriceTable.default(), Events(None))
    reply = await ask_json(
        recorder,
        "remote",
        "aggregate",
        [ChatMessage(role="user", content="decide")],
        AggregateDecision,
        round=1,
        max_tokens=64,
        retries=3,
    )
    assert reply.value is not None and reply.value.answer == "x"
    assert engine.calls[0].json_schema is None


async def test_a_truncated_reply_counts_as_invalid() -> None:
    engine = ScriptedEngine(default='{"decision": "final_answer", "answer": "a very long answer"}')
    recorder = Recorder(engine, engine, PriceTable.default(), Events(None))
    reply = await ask_json(
        recorder,
        "remote",
        "aggregate",
        [ChatMessage(role="user", content="decide")],
        AggregateDecision,
        round=1,
        max_tokens=2,
        retries=1,
    )
    assert reply.value is None and "cut off" in reply.errors[0]
    # The cut-off reply is not echoed back: the retry is the original message and a short note.
    retry = engine.calls[1].messages
    assert [m.role for m in retry] == ["user", "user"] and retry[0].content == "decide"
    assert "cut off at 2 tokens" in retry[1].content and "very long" not in retry[1].content
