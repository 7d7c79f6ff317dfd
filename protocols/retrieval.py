"""BM25 over chunks, for plans that select chunks by keywords instead of by id."""

from __future__ import annotations

import re
from collections.abc import Sequence

from rank_bm25 import BM25Plus

from protocols.chunking import Chunk

_WORD = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class ChunkRetriever:
    """Ranks chunks against keywords. Only chunks containing at least one keyword are returned.

    BM25Plus rather than BM25Okapi: Okapi's idf turns zero or negative for a term in half the
    chunks, which on the small chunk counts of a single document hides the right chunk.
    """

    def __init__(self, chunks: Sequence[Chunk]) -> None:
        if not chunks:
            raise ValueError("chunks: retrieval needs at least one chunk")
        self._ids = [chunk.id for chunk in chunks]
        self._terms = [set(tokenize(chunk.text)) for chunk in chunks]
        self._bm25 = BM25Plus([tokenize(chunk.text) for chunk in chunks])

    def top_k(self, keywords: Sequence[str], k: int) -> list[int]:
        """Ids of the ``k`` best chunks for ``keywords``, best first (ties: lower id first)."""
        query = [term for keyword in keywords for term in tokenize(keyword)]
        if not query or k < 1:
            return []
        wanted = set(query)
        scores = self._bm25.get_scores(query)
        ranked = sorted(
            (
                (-float(scores[position]), chunk_id)
                for position, chunk_id in enumerate(self._ids)
                if self._terms[position] & wanted
            ),
        )
        return [chunk_id for _, chunk_id in ranked[:k]]

    def rank(self, query: str, chunk_ids: Sequence[int]) -> list[int]:
        """``chunk_ids`` ordered by BM25 relevance to ``query``, best first; chunks that share no
        term with it keep their order at the end (ties: lower id first)."""
        terms = tokenize(query)
        if not terms:
            return list(chunk_ids)
        scores = self._bm25.get_scores(terms)
        position = {chunk_id: index for index, chunk_id in enumerate(self._ids)}
        return sorted(
            chunk_ids, key=lambda chunk_id: (-float(scores[position[chunk_id]]), chunk_id)
        )
