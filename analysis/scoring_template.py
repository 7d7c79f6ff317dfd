"""The fixed text every compression is scored under, and the one rule for contexts that don't fit.

A scorer builds the prefix ``head + context + middle + query + tail`` and appends the
compression after it. Each piece is tokenized on its own and the ids are concatenated, so the
compression has the same ids under every context and a context can be cut in token space.

Standard library only: the GPU benchmark imports this on machines without the project's other
dependencies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

INSTRUCTION = (
    "Read the document, then write down the information from it that answers the question."
)
# The smallest context budget worth scoring: below it the estimate would be about the template.
MIN_CONTEXT_TOKENS = 32

_CONTEXT_SENTINEL = "\u0000CONTEXT\u0000"
_QUERY_SENTINEL = "\u0000QUERY\u0000"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ScoringTemplate:
    """``head + context + middle + query + tail``; the compression follows ``tail``."""

    name: str
    head: str
    middle: str
    tail: str

    @classmethod
    def plain(cls) -> ScoringTemplate:
        """The default: plain text, identical for every scorer and model, so it never drifts."""
        return cls(
            name="plain-v1",
            head=f"{INSTRUCTION}\n\nDocument:\n",
            middle="\n\nQuestion: ",
            tail="\n\nAnswer:\n",
        )

    @classmethod
    def from_chat_template(cls, tokenizer: Any) -> ScoringTemplate:
        """The same user turn rendered through ``tokenizer``'s chat template (opt-in).

        Rendering with sentinels and splitting at them keeps the context and query out of the
        template's text, so they can still be tokenized (and truncated) on their own.
        """
        content = f"{INSTRUCTION}\n\nDocument:\n{_CONTEXT_SENTINEL}\n\nQuestion: {_QUERY_SENTINEL}"
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        if not isinstance(rendered, str):
            raise ValueError("template: the chat template did not render to text")
        head, rest = _split_once(rendered, _CONTEXT_SENTINEL)
        middle, tail = _split_once(rest, _QUERY_SENTINEL)
        return cls(name="chat-v1", head=head, middle=middle, tail=tail)

    def render(self, context: str, query: str) -> str:
        return f"{self.head}{context}{self.middle}{query}{self.tail}"


def _split_once(text: str, sentinel: str) -> tuple[str, str]:
    before, found, after = text.partition(sentinel)
    if not found or sentinel in after:
        raise ValueError("template: the chat template must show the user message exactly once")
    return before, after


def context_token_budget(
    window: int, template_tokens: int, longest_query: int, longest_continuation: int
) -> int:
    """Tokens every context may keep so that any prefix plus any continuation fits ``window``.

    One budget per call (not per compression) keeps every context cut the same way for all the
    compressions scored against it, which is what lets its prefix be computed once.
    """
    budget = window - template_tokens - longest_query - longest_continuation
    if budget < MIN_CONTEXT_TOKENS:
        raise ValueError(
            f"window: {window} tokens leave {budget} for the context after the template "
            f"({template_tokens}), the longest query ({longest_query}) and the longest "
            f"compression ({longest_continuation}); at least {MIN_CONTEXT_TOKENS} are needed"
        )
    return budget


def truncate_middle(tokens: Sequence[T], budget: int) -> list[T]:
    """Keep the first and last ``budget / 2`` tokens, dropping the middle.

    Documents state their subject at the start and often conclude at the end; the middle is
    the cheapest part to lose. The head gets the odd token.
    """
    if budget <= 0:
        raise ValueError(f"budget: must be > 0, got {budget}")
    if len(tokens) <= budget:
        return list(tokens)
    head = (budget + 1) // 2
    tail = budget - head
    return [*tokens[:head], *tokens[len(tokens) - tail :]] if tail else list(tokens[:head])


def truncate_middle_text(text: str, budget: int, count_tokens: Callable[[str], int]) -> str:
    """:func:`truncate_middle` for scorers that only see text: the most characters that fit.

    Binary search over how many characters to keep (half from each end) so that
    ``count_tokens`` of the result is at most ``budget``.
    """
    if count_tokens(text) <= budget:
        return text
    low, high = 0, len(text)  # keep `low` characters always fits; `high` never does
    while high - low > 1:
        keep = (low + high) // 2
        if count_tokens(_keep_ends(text, keep)) <= budget:
            low = keep
        else:
            high = keep
    return _keep_ends(text, low)


def _keep_ends(text: str, keep: int) -> str:
    head = (keep + 1) // 2
    tail = keep - head
    return text[:head] + (text[len(text) - tail :] if tail else "")
