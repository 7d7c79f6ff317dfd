"""Getting validated JSON out of a model: structured output where the engine supports it, a
forgiving parser where it does not, and retries that show the model its validation error.

Model text is only ever parsed as JSON data (``json.loads``); nothing here evaluates it.
"""

from __future__ import annotations

import copy
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


# A correction turn shows the model at most this much of its invalid reply: enough to see what
# was wrong, short enough that a rambling reply is not paid for twice.
_ECHO_CHARS = 600
# A reply cut off at max_tokens may be retried with up to this multiple of the caller's limit.
_MAX_TOKENS_GROWTH = 2


def tighten_schema(schema: dict[str, Any]) -> dict[str, Any] | None:
    """``schema`` with every string and list bound halved (strings not below 8 characters, lists
    not below 1 item), or None when there is nothing left to tighten."""
    tightened = copy.deepcopy(schema)
    changed = False

    def walk(node: Any) -> None:
        nonlocal changed
        if isinstance(node, dict):
            for key, floor in (("maxLength", 8), ("maxItems", 1)):
                value = node.get(key)
                if isinstance(value, int) and value > floor:
                    node[key] = max(floor, value // 2)
                    changed = True
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(tightened)
    return tightened if changed else None


def _identity(request: GenerationRequest) -> str:
    return request.model_dump_json(exclude={"seed"})


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
    reserve: int = 0,
) -> JSONReply[ModelT]:
    """Ask until the reply validates as ``model``, at most ``1 + retries`` times.

    Every retry changes something, so a greedy request is never sent twice:

    * a reply cut off at ``max_tokens`` is not echoed back: the retry is the original messages
      and a note to answer shorter, with a higher limit (up to twice the caller's) and, where the
      engine takes a schema, every string and list bound of the schema halved;
    * an invalid reply gets one short correction turn after the original messages (its text,
      clipped, and the validation error), so the prompt prefix stays byte-identical and a
      provider's prompt cache serves it;
    * a retry that would repeat an earlier request, or that the task's remote budget cannot pay
      for while keeping ``reserve`` tokens for what must follow, is not sent.

    The first attempt is the caller's to afford. ``value`` is None when every attempt failed.
    ``schema`` (default: ``model``'s) is the structured-output constraint, where supported.
    """
    engine = recorder.engines[side]
    if not engine.supports_json_schema:
        schema = None
    elif schema is None:
        schema = json_schema_of(model)
    reply: JSONReply[ModelT] = JSONReply(value=None)
    request = GenerationRequest(
        messages=tuple(messages),
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
        json_schema=schema,
    )
    sent: set[str] = set()
    for attempt in range(retries + 1):
        if attempt and not recorder.affords(side, request, reserve):
            recorder.guard.trim(
                round, f"{purpose}_retries", retries + 1 - attempt, "over the remote budget"
            )
            break
        sent.add(_identity(request))
        result = await recorder.generate_one(side, purpose, request, round=round)
        reply.raw.append(result.text)
        try:
            if result.finish_reason == "length":
                raise ValueError(
                    f"the reply was cut off at {request.max_tokens} tokens; answer shorter"
                )
            reply.value = parse_reply(result.text, model, context)
            return reply
        except ValueError as exc:
            error = str(exc)
            reply.errors.append(error)
            logger.info("%s attempt %d: invalid reply: %s", purpose, attempt + 1, error)
        if result.finish_reason == "length":
            # A cut-off reply is not sent back: it is as long as the reply may be, and the model
            # only needs to know that it must be shorter, with more room and tighter bounds.
            note = (
                f"Your last reply was cut off at {request.max_tokens} tokens. Reply with only "
                "the JSON object, shorter."
            )
            request = request.model_copy(
                update={
                    "messages": (*messages, ChatMessage(role="user", content=note)),
                    "max_tokens": min(request.max_tokens * 2, max_tokens * _MAX_TOKENS_GROWTH),
                    "json_schema": _tightened(request.json_schema),
                }
            )
        else:
            echo = result.text.strip()[:_ECHO_CHARS] or "(empty reply)"
            correction = (
                ChatMessage(role="assistant", content=echo),
                ChatMessage(
                    role="user",
                    content=f"That reply was invalid: {error}\nReply again with only the "
                    "corrected JSON object.",
                ),
            )
            request = request.model_copy(update={"messages": (*messages, *correction)})
            if _identity(request) in sent:  # the same mistake again: make the bounds tighter
                request = request.model_copy(
                    update={"json_schema": _tightened(request.json_schema)}
                )
        if temperature == 0 and _identity(request) in sent:
            # Nothing left to change: a greedy model would give the same reply again.
            recorder.guard.trim(
                round, f"{purpose}_retries", retries - attempt, "it would repeat a request"
            )
            break
    return reply


def _tightened(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    return (tighten_schema(schema) or schema) if schema is not None else None


def salvage_answer(text: str) -> str:
    """The best answer in a reply that failed validation: its "answer" field when it has one,
    else the text itself (the caller records a warning either way)."""
    try:
        answer = extract_json_object(text).get("answer")
    except JSONParseError:
        return text.strip()
    return answer.strip() if isinstance(answer, str) and answer.strip() else text.strip()
