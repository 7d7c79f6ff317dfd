"""The counterfactual every task is measured against: what ``remote_only`` would have sent.

Counted, never run, before the first remote call: the remote's own token counter over the
``remote_only`` prompt (the same template) for this question and these documents. The same number
bounds the task's remote budget (``protocols.cost_guard``) and is reported on every Result
(``Result.baseline``), with its price and the savings factor against what the task really cost.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from engines.base import ChatMessage, Engine
from engines.prices import PriceTable
from engines.usage import Usage


class Baseline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    remote_prompt_tokens: int = Field(
        description="prompt tokens remote_only would send for this question and these documents"
    )
    exceeds_context: bool = Field(
        description="remote_only could not run: prompt and reply exceed the remote's context"
    )
    usd: float = Field(description="those prompt tokens at the remote's input price")
    savings_factor: float | None = Field(
        default=None,
        description="baseline usd / the task's total usd; null when unpriced or free",
    )

    def with_savings(self, total_usd: float, priced: bool) -> Baseline:
        factor = self.usd / total_usd if priced and total_usd > 0 and self.usd > 0 else None
        return self.model_copy(
            update={"savings_factor": None if factor is None else round(factor, 4)}
        )


def count_baseline(
    prompt: str, remote: Engine, prices: PriceTable, *, reply_tokens: int
) -> Baseline:
    """The baseline of a task whose ``remote_only`` prompt is ``prompt``: the prompt tokens of
    that one user message, chat template included (``Engine.count_prompt_tokens``), and whether
    it leaves the remote room for a reply of ``reply_tokens``."""
    tokens = remote.count_prompt_tokens([ChatMessage(role="user", content=prompt)])
    return Baseline(
        remote_prompt_tokens=tokens,
        exceeds_context=tokens + reply_tokens > remote.context_window,
        usd=prices.cost(remote.model, Usage(prompt_tokens=tokens)),
    )
