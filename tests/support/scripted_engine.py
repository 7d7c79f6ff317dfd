"""A deterministic scripted engine for fast protocol tests.

It lives under tests/ only and is never a production default.

Rules are tried in order against the concatenated message contents; the first whose regex matches
produces the reply (a string, or a function of the request). Token counts are whitespace words so
tests can compute expected usage by hand.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from engines.base import ChatMessage, Engine, FinishReason, GenerationRequest, GenerationResult
from engines.errors import EngineError
from engines.usage import Usage

Reply = str | Callable[[GenerationRequest], str]


@dataclass
class Rule:
    pattern: str
    reply: Reply
    role: str | None = None  # match only messages of this role, when set
    compiled: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        self.compiled = re.compile(self.pattern, re.DOTALL)


class ScriptedEngine(Engine):
    kind = "scripted"
    supports_json_schema = True
    supports_score = True

    def __init__(
        self,
        rules: Sequence[Rule | tuple[str, Reply]] = (),
        *,
        default: Reply = "ok",
        model: str = "scripted",
        context_window: int = 4096,
        fail_on: str | None = None,
    ) -> None:
        super().__init__(model=model, context_window=context_window)
        self.rules = [r if isinstance(r, Rule) else Rule(r[0], r[1]) for r in rules]
        self.default = default
        self.fail_on = fail_on
        self.calls: list[GenerationRequest] = []
        self.batches: list[int] = []
        self.closed = False

    @staticmethod
    def words(text: str) -> int:
        return len(text.split())

    def count_tokens(self, text: str) -> int:
        return self.words(text)

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return sum(self.words(message.content) for message in messages)  # as ``generate`` counts

    def reply_for(self, request: GenerationRequest) -> str:
        for rule in self.rules:
            text = "\n".join(m.content for m in request.messages if rule.role in (None, m.role))
            if rule.compiled.search(text):
                return rule.reply(request) if callable(rule.reply) else rule.reply
        return self.default(request) if callable(self.default) else self.default

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.batches.append(len(requests))
        results = []
        for request in requests:
            self.calls.append(request)
            prompt = "\n".join(m.content for m in request.messages)
            if self.fail_on is not None and self.fail_on in prompt:
                raise EngineError(f"scripted failure on {self.fail_on!r}")
            text = self.reply_for(request)
            words = text.split()
            finish: FinishReason = "length" if len(words) > request.max_tokens else "stop"
            text = " ".join(words[: request.max_tokens]) if finish == "length" else text
            usage = Usage(
                prompt_tokens=self.words(prompt),
                completion_tokens=min(len(words), request.max_tokens),
            )
            results.append(
                GenerationResult(text=text, finish_reason=finish, usage=usage, model=self.model)
            )
        return results

    async def score(self, prefix: str, continuations: Sequence[str]) -> list[float]:
        # log p(z|x): each continuation word found in the prefix costs little, others a lot.
        prefix_words = set(prefix.split())
        return [
            sum(-0.1 if word in prefix_words else -5.0 for word in continuation.split())
            for continuation in continuations
        ]

    async def aclose(self) -> None:
        self.closed = True


CRASH_EXIT_CODE = 70  # how a process that ran a crash_on request exits


def echo(request: GenerationRequest) -> str:
    return f"echo {request.messages[-1].content}"


class SlowScriptedEngine(ScriptedEngine):
    """A scripted engine that takes ``delay_s`` per batch, and kills its whole process (exit
    ``CRASH_EXIT_CODE``) on a request containing ``crash_on``: a poison job or task. It echoes
    the last message (``echo <text>``) unless given another ``default``."""

    def __init__(self, delay_s: float = 0.0, crash_on: str | None = None, **options: object):
        options.setdefault("default", echo)
        super().__init__(**options)  # type: ignore[arg-type]
        self.delay_s = delay_s
        self.crash_on = crash_on

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        if self.crash_on is not None and any(
            self.crash_on in m.content for r in requests for m in r.messages
        ):
            logging.getLogger(__name__).error("crashing on purpose (%r)", self.crash_on)
            os._exit(CRASH_EXIT_CODE)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return await super().generate(requests)
