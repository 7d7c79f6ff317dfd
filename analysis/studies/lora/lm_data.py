"""Train/validation/test splits of the two tier-2 domains, and how windows are drawn from them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from analysis.studies.lora.corpus import Corpora, encode

# Splits interleave fixed-size chunks (1 in 20 to validation, 1 in 20 to test) rather than cut
# the text once: the stdlib is ordered by module name, so a single cut would put whole packages
# (and their vocabulary) in only one split.
CHUNK_CHARS = 2048
SPLIT_PERIOD = 20


@dataclass(frozen=True)
class DomainSplits:
    """Encoded train, validation and test text of one domain."""

    train: torch.Tensor
    validation: torch.Tensor
    test: torch.Tensor


@dataclass(frozen=True)
class LanguageData:
    """Source domain (prose) and target domain (code)."""

    prose: DomainSplits
    code: DomainSplits


def split_domain(tokens: torch.Tensor, train_limit: int | None = None) -> DomainSplits:
    """Interleaved chunk split; ``train_limit`` keeps only a slice of the training text."""
    chunks = list(torch.split(tokens, CHUNK_CHARS))
    validation = [c for i, c in enumerate(chunks) if i % SPLIT_PERIOD == SPLIT_PERIOD // 2]
    test = [c for i, c in enumerate(chunks) if i % SPLIT_PERIOD == 0]
    train_chunks = [
        c for i, c in enumerate(chunks) if i % SPLIT_PERIOD not in (0, SPLIT_PERIOD // 2)
    ]
    if train_limit is not None and train_chunks:
        # An evenly spaced subset of chunks, so the slice still spans every package.
        needed = max(1, -(-train_limit // CHUNK_CHARS))
        stride = max(1, len(train_chunks) // needed)
        train_chunks = train_chunks[::stride][:needed]
    return DomainSplits(
        train=torch.cat(train_chunks),
        validation=torch.cat(validation),
        test=torch.cat(test),
    )


def make_language_data(corpora: Corpora, code_chars: int, device: str) -> LanguageData:
    """Encode and split both domains, moved to ``device``."""

    def to_device(splits: DomainSplits) -> DomainSplits:
        return DomainSplits(*(t.to(device) for t in (splits.train, splits.validation, splits.test)))

    return LanguageData(
        prose=to_device(split_domain(encode(corpora.prose))),
        code=to_device(split_domain(encode(corpora.code), train_limit=code_chars)),
    )


def sample_windows(
    tokens: torch.Tensor, batch_size: int, context: int, generator: torch.Generator
) -> torch.Tensor:
    """``batch_size`` random windows of ``context + 1`` characters (inputs plus next characters)."""
    starts = torch.randint(0, len(tokens) - context - 1, (batch_size,), generator=generator)
    offsets = torch.arange(context + 1)
    return tokens[(starts[:, None] + offsets).to(tokens.device)]


def evaluation_windows(tokens: torch.Tensor, count: int, context: int) -> torch.Tensor:
    """``count`` evenly spaced, non-overlapping windows: the same for every model evaluated."""
    available = len(tokens) // (context + 1)
    if available < 1:
        raise ValueError(f"tokens: {len(tokens)} characters hold no window of {context + 1}")
    indices = torch.linspace(0, available - 1, min(count, available)).round().long()
    starts = indices * (context + 1)
    offsets = torch.arange(context + 1)
    return tokens[(starts[:, None] + offsets).to(tokens.device)]
