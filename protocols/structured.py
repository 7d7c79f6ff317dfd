"""Getting validated JSON out of a model: structured output where the engine supports it, a
forgiving parser where it does not, and retries that show the model its validation error.

Model text is only ever parsed as JSON data (``json.loads``); nothing here evaluates it.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from engines.base import ChatMessage, GenerationRequest
from protocols.accounting import Recorder, Side
from protocols.plans import json_schema_of

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_MAX_ERRORS_SHOWN = 5


class JSONParseError(ValueError):
    """The model's text holds no JSON object."""


def extract_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in ``text``: the whole text, a fenced block, or the first ``{...}``."""
    candidates = [text.strip()]
    candidates += [block.strip() for block in _FENCE.findall(text)]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    raise JSONParseError("the reply contains no JSON object")


def parse_reply(text: str, model: type[ModelT], context: dict[str, Any] | None = None) -> ModelT:
    """Parse and validate; raises ``ValueError`` with a short message a model can act on."""
    data = extract_json_object(text)
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise ValueError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_input=False, include_url=False)[:_MAX_ERRORS_SHOWN]:
        location = ".".join(str(part) for part in error["loc"]) or "(root)"
        lines.append(f"{location}: {error['msg']}")
    if exc.error_count() > _MAX_ERRORS_SHOWN:
        lines.append(f"... and {exc.error_count() - _MAX_ERRORS_SHOWN} more errors")
    return "; ".join(lines)


@dataclass
class JSONReply(Generic[ModelT]):
    value: ModelT | None
    raw: list[str] = field(default_factory=list)  # every attempt's text, in order
    errors: list[str] = field(default_factory=list)

    @property
    def attempts(self) -> int:
        return len(self.raw)


async def ask_json(
    recorder: Recorder,
    side: Side,
    purpose: str,
    messages: list[ChatMessage],
    model: type[ModelT],
    *,
    round: int,
    max_tokens: int,
    retries: int,
    context: dict[str, Any] | None = None,
    temperature: float = 0.0,
    seed: int | None = None,
    schema: dict[str, Any] | None = None,
) -> JSONReply[ModelT]:
    """Ask until the reply validates as ``model``, at most ``1 + retries`` times.

    Each retry continues the conversation with the invalid reply and the validation error, so
    the model can fix exactly what was wrong; a reply cut off at ``max_tokens`` is not echoed
    back (the retry is the original messages and a note to answer shorter). ``value`` is None
    when every attempt failed.
    ``schema`` (default: ``model``'s) is the structured-output constraint, where supported.
    """
    engine = recorder.engines[side]
    if not engine.supports_json_schema:
        schema = None
    elif schema is None:
        schema = json_schema_of(model)
    conversation = list(messages)
    reply: JSONReply[ModelT] = JSONReply(value=None)
    for attempt in range(retries + 1):
        request = GenerationRequest(
            messages=tuple(conversation),
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
            json_schema=schema,
        )
        result = await recorder.generate_one(side, purpose, request, round=round)
        reply.raw.append(result.text)
        try:
            if result.finish_reason == "length":
                raise ValueError(f"the reply was cut off at {max_tokens} tokens; answer shorter")
            reply.value = parse_reply(result.text, model, context)
            return reply
        except ValueError as exc:
            error = str(exc)
            reply.errors.append(error)
            logger.info("%s attempt %d: invalid reply: %s", purpose, attempt + 1, error)
        if result.finish_reason == "length":
            # A cut-off reply is not sent back: it is as long as the reply may be, and the model
            # only needs to know that it must be shorter. The retry's prompt stays the original.
            conversation = [
                *messages,
                ChatMessage(
                    role="user",
                    content=f"Your last reply was cut off at {max_tokens} tokens. Reply with only "
                    "the JSON object, shorter.",
                ),
            ]
            continue
        conversation += [
            ChatMessage(role="assistant", content=result.text or "(empty reply)"),
            ChatMessage(
                role="user",
                content=f"That reply was invalid: {error}\nReply again with only the corrected "
                "JSON object.",
            ),
        ]
    return reply


def salvage_answer(text: str) -> str:
    """The best answer in a reply that failed validation: its "answer" field when it has one,
    else the text itself (the caller records a warning either way)."""
    try:
        answer = extract_json_object(text).get("answer")
    except JSONParseError:
        return text.strip()
    return answer.strip() if isinstance(answer, str) and answer.strip() else text.strip()
