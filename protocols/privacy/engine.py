"""``PrivateEngine``: the one seam between a task and the remote in privacy mode.

It wraps the remote engine for one task. Every request is pseudonymized (all messages: the
question, metadata, job outputs, findings, scratchpad, retries: whatever a protocol sends) after
the local model wrote it and before the remote sees it; every reply is restored before the
protocol reads it, so plans carry real names to the local jobs and answers come back whole.
Detection runs in a worker thread: it costs milliseconds of CPU per call, which the event loop
of a gateway must not wait for.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from engines.base import ChatMessage, Engine, GenerationRequest, GenerationResult, WrappedEngine
from protocols.privacy.pseudonymizer import Pseudonymizer
from protocols.privacy.report import CrossedMessage


class PrivateEngine(WrappedEngine):
    def __init__(self, inner: Engine, pseudonymizer: Pseudonymizer) -> None:
        super().__init__(inner)
        self.pseudonymizer = pseudonymizer

    def _private(self, requests: Sequence[GenerationRequest]) -> list[GenerationRequest]:
        private = []
        for request in requests:
            messages = tuple(
                ChatMessage(
                    role=message.role, content=self.pseudonymizer.pseudonymize(message.content)
                )
                for message in request.messages
            )
            self.pseudonymizer.record_crossed(
                [CrossedMessage(role=m.role, content=m.content) for m in messages]
            )
            private.append(request.model_copy(update={"messages": messages}))
        return private

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        private = await asyncio.to_thread(self._private, requests)
        results = await self.inner.generate(private)
        return [
            dataclasses.replace(
                result,
                text=self.pseudonymizer.restore(
                    result.text, json_strings=request.json_schema is not None
                ),
            )
            for request, result in zip(requests, results, strict=True)
        ]

    async def score(self, prefix: str, continuations: Sequence[str]) -> list[float]:
        private_prefix, *private_continuations = await asyncio.to_thread(
            lambda: [self.pseudonymizer.pseudonymize(text) for text in (prefix, *continuations)]
        )
        scores: list[float] = await self.inner.score(private_prefix, private_continuations)
        return scores
