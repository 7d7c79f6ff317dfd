"""Any ``Engine`` with ``score`` (the workers' vLLM engine) as a mutual-information scorer.

An engine sees text only, so contexts are cut with :func:`truncate_middle_text` (characters,
measured with the engine's own token count) and the prefix is tokenized as one string by the
engine. Numbers are therefore not comparable with a ``TransformersPrefixScorer`` of the same
model; ``info().kind`` tells them apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from analysis.scorer_base import PrefixGroup, ScoredGroups, Scorer, ScorerInfo
from analysis.scoring_template import ScoringTemplate, context_token_budget, truncate_middle_text
from engines.base import Engine


class EngineScorer(Scorer):
    """Scores through ``engine.score``; ``concurrency`` groups are in flight at once."""

    def __init__(
        self, engine: Engine, *, template: ScoringTemplate | None = None, concurrency: int = 4
    ) -> None:
        if not engine.supports_score:
            raise ValueError(f"engine: {engine.kind} engine {engine.model!r} cannot score")
        self.engine = engine
        self.template = template or ScoringTemplate.plain()
        self.concurrency = concurrency

    def info(self) -> ScorerInfo:
        return ScorerInfo(
            kind=f"engine-{self.engine.kind}",
            model=self.engine.model,
            template=self.template.name,
            window=self.engine.context_window,
        )

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    async def score_groups(self, groups: Sequence[PrefixGroup]) -> ScoredGroups:
        if not groups:
            raise ValueError("groups: nothing to score")
        template_tokens = self.count_tokens(self.template.render("", ""))
        # A margin of 8 tokens covers seams where text tokenizes differently when joined.
        budget = context_token_budget(
            self.engine.context_window - 8,
            template_tokens,
            max(self.count_tokens(g.query) for g in groups),
            max(self.count_tokens(text) for g in groups for text in g.continuations),
        )
        truncated = sum(self.count_tokens(g.context) > budget for g in groups)
        slots = asyncio.Semaphore(self.concurrency)

        async def one(group: PrefixGroup) -> list[float]:
            async with slots:
                context = truncate_middle_text(group.context, budget, self.count_tokens)
                prefix = self.template.render(context, group.query)
                return await self.engine.score(prefix, group.continuations)

        # Every coroutine goes straight into a task (unlike ``gather_in_order``, which holds some
        # back), so cancelling the call (the gateway's background scoring at shutdown) leaves no
        # coroutine that was never awaited.
        log_probs = list(await asyncio.gather(*(one(g) for g in groups)))
        return ScoredGroups(log_probs, context_token_budget=budget, truncated_contexts=truncated)
