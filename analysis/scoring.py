"""A Hugging Face ``transformers`` scorer that computes each prefix's KV cache once.

vLLM's V1 engine skips its prefix cache for requests that ask for prompt log-probs, so scoring
N·M compressions against N contexts there costs N·N·M full passes. Here each prefix
(template + context + query) runs once and its compressions are scored as short suffixes in
batches against the expanded cache (``analysis.prefix_scoring``). ``naive()`` returns the same
scorer running full passes, for agreement checks and the benchmark.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from analysis.prefix_scoring import score_continuations, use_grouped_query_sdpa
from analysis.scorer_base import PrefixGroup, ScoredGroups, Scorer, ScorerInfo
from analysis.scoring_template import ScoringTemplate, context_token_budget, truncate_middle

logger = logging.getLogger(__name__)


class TransformersPrefixScorer(Scorer):
    """log p(z | x, q) from a causal LM in float32, prefix computed once per group."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_name: str,
        template: ScoringTemplate | None = None,
        reuse_prefix: bool = True,
        batch_size: int = 8,
        max_window: int | None = None,
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self.model_name = model_name
        self.template = template or ScoringTemplate.plain()
        self.reuse_prefix = reuse_prefix
        self.batch_size = batch_size
        model_window = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        windows = [w for w in (model_window, max_window) if w]
        if not windows:
            raise ValueError("max_window: the model does not state its window; pass max_window")
        self.window = min(windows)
        # One forward pass at a time: concurrent estimates would only thrash the same cores.
        self._lock = threading.Lock()
        # The template is tokenized once; plain-text templates take the tokenizer's usual
        # leading special tokens (BOS where it has one), chat templates already render theirs.
        plain = not self.template.name.startswith("chat")
        self._head_ids = self._encode(self.template.head, special=plain)
        self._middle_ids = self._encode(self.template.middle)
        self._tail_ids = self._encode(self.template.tail)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, model_name: str | None = None, device: str = "cpu", **options: Any
    ) -> TransformersPrefixScorer:
        """Load a local Hugging Face directory in float32 (offline: nothing is downloaded)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model: Any = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        model.to(device).eval()
        use_grouped_query_sdpa(model)
        return cls(model, tokenizer, model_name=model_name or Path(path).name, **options)

    def naive(self) -> TransformersPrefixScorer:
        """This scorer (same model, template, window) running one full pass per compression."""
        return self.variant(reuse_prefix=False)

    def variant(
        self,
        *,
        reuse_prefix: bool | None = None,
        batch_size: int | None = None,
        max_window: int | None = None,
        template: ScoringTemplate | None = None,
    ) -> TransformersPrefixScorer:
        """A scorer sharing this one's loaded model, with some options changed."""
        return TransformersPrefixScorer(
            self._model,
            self._tokenizer,
            model_name=self.model_name,
            template=template or self.template,
            reuse_prefix=self.reuse_prefix if reuse_prefix is None else reuse_prefix,
            batch_size=batch_size or self.batch_size,
            max_window=max_window or self.window,
        )

    def info(self) -> ScorerInfo:
        # Prefix reuse is not part of the identity: it changes speed, not the numbers.
        return ScorerInfo(
            kind="transformers",
            model=self.model_name,
            template=self.template.name,
            window=self.window,
        )

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text))

    async def score_groups(self, groups: Sequence[PrefixGroup]) -> ScoredGroups:
        # A worker thread keeps the event loop (and the task's answer) responsive meanwhile.
        return await asyncio.to_thread(self.score_groups_sync, groups)

    def score_groups_sync(self, groups: Sequence[PrefixGroup]) -> ScoredGroups:
        if not groups:
            raise ValueError("groups: nothing to score")
        continuation_ids = [[self._encode(text) for text in g.continuations] for g in groups]
        for group_index, ids_list in enumerate(continuation_ids):
            for index, ids in enumerate(ids_list):
                if not ids:
                    raise ValueError(
                        f"groups[{group_index}].continuations[{index}]: no tokens to score"
                    )
        query_ids = [self._encode(g.query) for g in groups]
        budget = context_token_budget(
            self.window,
            len(self._head_ids) + len(self._middle_ids) + len(self._tail_ids),
            max(len(ids) for ids in query_ids),
            max(len(ids) for ids_list in continuation_ids for ids in ids_list),
        )
        log_probs: list[list[float]] = []
        truncated = 0
        with self._lock:
            for group, queries, ids_list in zip(groups, query_ids, continuation_ids, strict=True):
                context_ids = self._encode(group.context)
                truncated += len(context_ids) > budget
                prefix = [
                    *self._head_ids,
                    *truncate_middle(context_ids, budget),
                    *self._middle_ids,
                    *queries,
                    *self._tail_ids,
                ]
                log_probs.append(
                    score_continuations(
                        self._model,
                        prefix,
                        ids_list,
                        reuse_prefix=self.reuse_prefix,
                        batch_size=self.batch_size,
                    )
                )
        if truncated:
            logger.info(
                "scoring: %d of %d contexts cut to %d tokens", truncated, len(groups), budget
            )
        return ScoredGroups(log_probs, context_token_budget=budget, truncated_contexts=truncated)

    def _encode(self, text: str, *, special: bool = False) -> list[int]:
        # Every piece is tokenized on its own: a compression gets the same ids after any prefix.
        return list(self._tokenizer.encode(text, add_special_tokens=special))
