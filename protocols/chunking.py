"""Splitting documents into chunks the local model can read, measured in its own tokens.

Three strategies:

* ``tokens``: sentences packed up to ``chunk_tokens``, consecutive chunks sharing about
  ``overlap_tokens`` (whole sentences, so the overlap is approximate); chunks may span pages.
* ``pages``: one chunk per page; a page longer than ``chunk_tokens`` is split by sentences.
* ``paragraphs``: whole paragraphs packed up to ``chunk_tokens``; a paragraph is only cut when it
  alone is too long.

Token counts come from ``count_tokens`` (the engine's tokenizer), applied per sentence and summed;
the sum can differ from the joined text's count by a token per boundary, which the prompt
budget's margin absorbs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from protocols.task import ChunkingStrategy, Document

TokenCounter = Callable[[str], int]
MIN_CHUNK_TOKENS = 32
# A token never spans more characters than this many per token of budget in practice; it bounds
# the text handed to the tokenizer in one call (see _split_oversized).
_CHARS_PER_TOKEN_BOUND = 4

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n")


@dataclass(frozen=True, slots=True)
class Chunk:
    id: int
    document_index: int
    document_name: str
    text: str
    first_page: int  # 1-based
    last_page: int
    tokens: int

    @property
    def pages_label(self) -> str:
        if self.first_page == self.last_page:
            return f"page {self.first_page}"
        return f"pages {self.first_page}-{self.last_page}"


@dataclass(frozen=True, slots=True)
class _Unit:
    text: str
    separator: str  # what follows it inside a chunk: " " within a paragraph, "\n\n" after one
    page: int
    tokens: int


def fit_chunk_tokens(requested: int, context_window: int, reserved_tokens: int) -> int:
    """The chunk size to use: ``requested``, shrunk so a chunk plus ``reserved_tokens`` (prompt
    and reply) fits the context window. Raises ``ValueError`` when nothing sensible fits."""
    available = context_window - reserved_tokens
    if available < MIN_CHUNK_TOKENS:
        raise ValueError(
            f"chunk_tokens: the local context window ({context_window} tokens) leaves only "
            f"{available} tokens for a chunk after the prompt and the reply ({reserved_tokens})"
        )
    return min(requested, available)


def chunk_documents(
    documents: Sequence[Document],
    *,
    count_tokens: TokenCounter,
    strategy: ChunkingStrategy = "tokens",
    chunk_tokens: int = 1000,
    overlap_tokens: int = 50,
) -> list[Chunk]:
    """Chunks of every document, numbered from 0 across documents in order."""
    if chunk_tokens < MIN_CHUNK_TOKENS:
        raise ValueError(f"chunk_tokens: must be at least {MIN_CHUNK_TOKENS}, got {chunk_tokens}")
    if not 0 <= overlap_tokens < chunk_tokens:
        raise ValueError(f"chunk_overlap: must be in [0, {chunk_tokens}), got {overlap_tokens}")
    chunks: list[Chunk] = []
    for index, document in enumerate(documents):
        if strategy == "tokens":
            groups = _pack(
                _units(document, count_tokens, chunk_tokens), chunk_tokens, overlap_tokens
            )
        elif strategy == "pages":
            groups = (
                group
                for page in range(1, len(document.pages) + 1)
                for group in _pack(
                    _units(document, count_tokens, chunk_tokens, only_page=page), chunk_tokens, 0
                )
            )
        elif strategy == "paragraphs":
            groups = _pack(_paragraph_units(document, count_tokens, chunk_tokens), chunk_tokens, 0)
        else:
            raise ValueError(f"chunking: unknown strategy {strategy!r}")
        for group in groups:
            text = "".join(unit.text + unit.separator for unit in group).strip()
            chunks.append(
                Chunk(
                    id=len(chunks),
                    document_index=index,
                    document_name=document.name,
                    text=text,
                    first_page=group[0].page,
                    last_page=group[-1].page,
                    tokens=sum(unit.tokens for unit in group),
                )
            )
    return chunks


def _units(
    document: Document, count: TokenCounter, limit: int, only_page: int | None = None
) -> Iterator[_Unit]:
    """Sentences (or smaller pieces of over-long sentences), in document order."""
    for page_number, page in enumerate(document.pages, start=1):
        if only_page is not None and page_number != only_page:
            continue
        for paragraph in _PARAGRAPH_BREAK.split(page):
            sentences = [s.strip() for s in _SENTENCE_END.split(paragraph) if s.strip()]
            for position, sentence in enumerate(sentences):
                separator = "\n\n" if position == len(sentences) - 1 else " "
                pieces = _split_oversized(sentence, count, limit)
                for piece_index, (piece, tokens) in enumerate(pieces):
                    last = piece_index == len(pieces) - 1
                    yield _Unit(piece, separator if last else " ", page_number, tokens)


def _paragraph_units(document: Document, count: TokenCounter, limit: int) -> Iterator[_Unit]:
    for page_number, page in enumerate(document.pages, start=1):
        for paragraph in _PARAGRAPH_BREAK.split(page):
            paragraph = paragraph.strip()
            if not paragraph:
                continue
            tokens = count(paragraph) if len(paragraph) <= limit * _CHARS_PER_TOKEN_BOUND else None
            if tokens is not None and tokens <= limit:
                yield _Unit(paragraph, "\n\n", page_number, tokens)
                continue
            # Too long to stay whole: fall back to its sentences.
            single = Document(name=document.name, pages=(paragraph,))
            for unit in _units(single, count, limit):
                yield _Unit(unit.text, unit.separator, page_number, unit.tokens)


def _split_oversized(text: str, count: TokenCounter, limit: int) -> list[tuple[str, int]]:
    """``text`` as pieces of at most ``limit`` tokens each, with their token counts."""
    # Pre-cut by characters so the tokenizer never sees a huge string (a 16 MiB line without
    # punctuation would otherwise be tokenized whole, many times).
    max_chars = limit * _CHARS_PER_TOKEN_BOUND
    if len(text) > max_chars:
        pieces: list[tuple[str, int]] = []
        for window in _char_windows(text, max_chars):
            pieces.extend(_split_oversized(window, count, limit))
        return pieces
    tokens = count(text)
    if tokens <= limit:
        return [(text, tokens)]
    words = text.split(" ")
    if len(words) > 1:
        middle = len(words) // 2
        halves = [" ".join(words[:middle]), " ".join(words[middle:])]
    else:
        middle = len(text) // 2
        halves = [text[:middle], text[middle:]]
    return [piece for half in halves for piece in _split_oversized(half, count, limit)]


def _char_windows(text: str, size: int) -> Iterator[str]:
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            space = text.rfind(" ", start + size // 2, end)
            end = space + 1 if space > 0 else end
        yield text[start:end].strip()
        start = end


def _pack(units: Iterator[_Unit], limit: int, overlap: int) -> Iterator[list[_Unit]]:
    """Greedy packing of units into groups of at most ``limit`` tokens, carrying the last units
    of each group (up to ``overlap`` tokens) into the next."""
    group: list[_Unit] = []
    group_tokens = 0
    fresh = 0  # units in the group that were not carried over from the previous one
    for unit in units:
        if group and group_tokens + unit.tokens > limit:
            yield group
            carried = _tail(group, overlap, limit - unit.tokens)
            group, group_tokens, fresh = carried, sum(u.tokens for u in carried), 0
        group.append(unit)
        group_tokens += unit.tokens
        fresh += 1
    if group and fresh:
        yield group


def _tail(group: list[_Unit], overlap: int, room: int) -> list[_Unit]:
    tail: list[_Unit] = []
    tokens = 0
    for unit in reversed(group):
        if tokens + unit.tokens > min(overlap, room):
            break
        tail.insert(0, unit)
        tokens += unit.tokens
    return tail
