"""The remote budget of one task, tied to what sending the documents would cost.

``max_remote_fraction`` x the baseline (the remote prompt tokens ``remote_only`` would send) is
what every remote call of a task may send together: every round, every retry. The recorder asks
the guard before each remote call (the call's prompt counted by the remote engine's
``count_prompt_tokens``: exact or an upper bound) and charges it the prompt tokens the remote
reports after; a call that does not fit is never sent. The protocols plan around it (findings
fitted to what is left, another round only when it can be paid for, a fallback when not even one
round fits) and record every such decision here, for ``Result.cost_guard``.

The remote's count may be an estimate (another model's tokenizer standing in for the
provider's), and privacy placeholders may take more tokens than the values they replace: when the
remote reports more prompt tokens than were counted, every later count is scaled up by the
largest such ratio seen (``count_scale``), so a low count can push past the budget by at most its
first call's difference.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field


class RemoteBudgetExceeded(RuntimeError):
    """A remote call was about to exceed the task's remote budget (a protocol bug: protocols ask
    ``CostGuard.affords`` first); it was not sent."""


class GuardEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    round: int
    kind: str = Field(description="what was trimmed or which fallback was taken")
    count: int = Field(default=0, description="how many items (findings, tasks, retries, ...)")
    detail: str = ""


class CostGuardRecord(BaseModel):
    """Every decision the remote budget made for one task."""

    model_config = ConfigDict(extra="forbid")

    baseline_prompt_tokens: int = Field(description="remote_only's prompt tokens (counted)")
    max_remote_fraction: float | None = Field(description="null: no budget (the baselines)")
    budget_prompt_tokens: int | None = Field(description="fraction x baseline, rounded down")
    spent_prompt_tokens: int = Field(description="remote prompt tokens of every call together")
    count_scale: float = Field(
        default=1.0,
        description="the most the remote reported over what was counted for a call (1.0: never "
        "more); counts after it were scaled by it",
    )
    trimmed: list[GuardEvent] = Field(default_factory=list)
    fallbacks: list[GuardEvent] = Field(default_factory=list)


class CostGuard:
    """The budget of one task run. ``fraction=None`` records spending without limiting it."""

    def __init__(self, baseline_tokens: int, fraction: float | None) -> None:
        self.baseline_tokens = baseline_tokens
        self.fraction = fraction
        self.budget: int | None = (
            None if fraction is None else math.floor(fraction * baseline_tokens)
        )
        self.spent = 0
        self.count_scale = 1.0
        self.trimmed: list[GuardEvent] = []
        self.fallbacks: list[GuardEvent] = []

    @property
    def left(self) -> float:
        """Prompt tokens still to spend, as the remote counts them before a call (the budget's
        remainder over ``count_scale``; infinite without a budget)."""
        if self.budget is None:
            return math.inf
        return max(self.budget - self.spent, 0) / self.count_scale

    def affords(self, tokens: int) -> bool:
        return tokens <= self.left

    def admit(self, tokens: int, purpose: str) -> None:
        if not self.affords(tokens):
            raise RemoteBudgetExceeded(
                f"a {purpose} call of up to {tokens} prompt tokens was not sent: "
                f"{self.left:.0f} of the remote budget ({self.budget}) are left"
            )

    def last_round(self, number: int, max_rounds: int, through_next: int, step: str) -> bool:
        """Whether round ``number``'s ``step`` must be its last: the final round, or one after
        which the budget could not pay for ``through_next`` tokens (this step's prompt and the
        next round's); the rounds given up are recorded."""
        if number >= max_rounds:
            return True
        if self.affords(through_next):
            return False
        self.trim(
            number,
            "rounds",
            max_rounds - number,
            f"the budget cannot pay for another round: this {step} is the last",
        )
        return True

    def charge(self, prompt_tokens: int, counted: int | None = None) -> None:
        """Spend what the remote reported for a call; ``counted`` is what was counted for it
        before it was sent."""
        self.spent += prompt_tokens
        if counted and prompt_tokens > counted:
            self.count_scale = max(self.count_scale, prompt_tokens / counted)

    def trim(self, round: int, kind: str, count: int, detail: str = "") -> None:
        if count:
            self.trimmed.append(GuardEvent(round=round, kind=kind, count=count, detail=detail))

    def fall_back(self, round: int, kind: str, detail: str, count: int = 0) -> None:
        self.fallbacks.append(GuardEvent(round=round, kind=kind, count=count, detail=detail))

    def record(self) -> CostGuardRecord:
        return CostGuardRecord(
            baseline_prompt_tokens=self.baseline_tokens,
            max_remote_fraction=self.fraction,
            budget_prompt_tokens=self.budget,
            spent_prompt_tokens=self.spent,
            count_scale=round(self.count_scale, 4),
            trimmed=list(self.trimmed),
            fallbacks=list(self.fallbacks),
        )
