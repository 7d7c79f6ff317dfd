"""An engine wrapper that meters what one task consumed and, on the remote side, holds the task
to its cost cap.

Every call of a task goes through it, so the usage of a task that is cancelled or fails half-way
is still known and billed. Before each remote call it checks that the call's worst case (prompt
bound plus ``max_tokens`` of output) still fits what is left of the task's reservation.

Billing does not trust the provider's reply: a call is priced as the model the gateway asked for
(a reply naming another model, a renamed deployment or a proxy's alias, is recorded in
``reply_models``, never priced at 0 for it). Usage reported beyond the worst case (a provider
counting more tokens than the bound) is billed as reported: ``overrun`` then says the task spent
more than its reservation, and the key's balance goes negative, so its next admission is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from engines.base import Engine, GenerationRequest, GenerationResult, WrappedEngine
from engines.errors import EngineError
from engines.prices import PriceTable
from engines.usage import Usage

# Room for chat-template markers on top of the text's own tokens.
TEMPLATE_TOKENS = 64


class CostCapReached(EngineError):
    """The next remote call could cost more than what is left of the task's cost cap."""


def prompt_token_bound(engine: Engine, request: GenerationRequest) -> int:
    """An upper bound on the prompt tokens a provider bills for ``request``: no more than the
    context window, and no more than one token a character (the engine's own count when it is
    higher), plus the chat template."""
    text = "\n".join(message.content for message in request.messages)
    tokens = max(len(text), engine.count_tokens(text)) + TEMPLATE_TOKENS
    return min(tokens, engine.context_window)


def worst_case_call_usd(
    engine: Engine, prices: PriceTable, requests: Sequence[GenerationRequest]
) -> float:
    price = prices.price_for(engine.model)
    if price is None:
        return 0.0
    total = 0.0
    for request in requests:
        total += price.cost(
            Usage(prompt_tokens=prompt_token_bound(engine, request), completion_tokens=0)
        ) + price.cost(Usage(completion_tokens=request.max_tokens))
    return total


class MeteredEngine(WrappedEngine):
    """Delegates to ``inner``; counts usage and cost; refuses remote calls past ``cap_usd``."""

    def __init__(
        self,
        inner: Engine,
        prices: PriceTable,
        *,
        priced: bool,
        cap_usd: float | None = None,
    ) -> None:
        super().__init__(inner)
        self.prices = prices
        self.priced = priced  # False for the local engine and for a local stand-in remote
        self.cap_usd = cap_usd
        self.usage = Usage()
        self.cost_usd = 0.0
        self.requests = 0
        self.aborted_prompt_tokens = 0
        self.reply_models: set[str] = set()  # models replies named other than the one asked for

    @property
    def overrun(self) -> bool:
        """More was billed than the task's cap (its reservation) allowed."""
        return self.cap_usd is not None and self.cost_usd > self.cap_usd + 1e-9

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        worst = worst_case_call_usd(self.inner, self.prices, requests) if self.priced else 0.0
        if self.cap_usd is not None and self.cost_usd + worst > self.cap_usd + 1e-12:
            raise CostCapReached(
                f"the task reached its cost cap (${self.cap_usd:.6f}): the next remote call "
                f"could cost up to ${worst:.6f} and ${self.cap_usd - self.cost_usd:.6f} is left"
            )
        try:
            results = await self.inner.generate(requests)
        except asyncio.CancelledError:
            # An aborted call may still be billed for its prompt: count it at its bound.
            prompt = sum(prompt_token_bound(self.inner, r) for r in requests)
            self._add(Usage(prompt_tokens=prompt), self.inner.model, len(requests))
            self.aborted_prompt_tokens += prompt
            raise
        for result in results:
            if result.model and result.model != self.inner.model:
                self.reply_models.add(result.model)
            self._add(result.usage, self.inner.model, 1)
        return results

    def _add(self, usage: Usage, model: str, requests: int) -> None:
        self.usage = self.usage + usage
        self.requests += requests
        if self.priced:
            self.cost_usd += self.prices.cost(model, usage)
