"""Chunking by tokens, pages and paragraphs, and BM25 retrieval over the chunks."""

from __future__ import annotations

import itertools

import pytest

from protocols.chunking import chunk_documents, fit_chunk_tokens
from protocols.retrieval import ChunkRetriever
from protocols.synthetic import make_document
from protocols.task import Document


def words(text: str) -> int:
    return len(text.split())


def test_token_chunks_respect_the_size_and_cover_every_sentence() -> None:
    document = make_document(10, words_per_page=120, seed=1).document
    chunks = chunk_documents([document], count_tokens=words, chunk_tokens=100, overlap_tokens=0)
    assert all(chunk.tokens <= 100 for chunk in chunks)
    assert [chunk.id for chunk in chunks] == list(range(len(chunks)))
    assert sum(chunk.tokens for chunk in chunks) == sum(words(page) for page in document.pages)


def test_token_chunks_overlap() -> None:
    document = Document(text=" ".join(f"Sentence number {i} is here." for i in range(40)))
    chunks = chunk_documents([document], count_tokens=words, chunk_tokens=50, overlap_tokens=10)
    for previous, following in itertools.pairwise(chunks):
        last_sentence = previous.text.rsplit(". ", 1)[-1]
        assert last_sentence.rstrip(".") in following.text
    assert all(chunk.tokens <= 50 for chunk in chunks)


def test_chunks_record_their_pages() -> None:
    document = Document(name="d", pages=("alpha one.", "beta two.", "gamma three."))
    chunks = chunk_documents(
        [document], count_tokens=words, strategy="pages", chunk_tokens=40, overlap_tokens=0
    )
    assert [(c.text, c.first_page, c.last_page) for c in chunks] == [
        ("alpha one.", 1, 1),
        ("beta two.", 2, 2),
        ("gamma three.", 3, 3),
    ]
    merged = chunk_documents([document], count_tokens=words, chunk_tokens=40, overlap_tokens=0)
    assert len(merged) == 1 and (merged[0].first_page, merged[0].last_page) == (1, 3)


def test_long_page_is_split_within_the_page() -> None:
    long_page = " ".join(f"Word{i} is long." for i in range(100))
    document = Document(pages=(long_page, "short page."))
    chunks = chunk_documents(
        [document], count_tokens=words, strategy="pages", chunk_tokens=60, overlap_tokens=0
    )
    assert all(chunk.first_page == chunk.last_page for chunk in chunks)
    assert chunks[-1].text == "short page."
    assert all(chunk.tokens <= 60 for chunk in chunks)


def test_paragraphs_stay_whole_when_they_fit() -> None:
    paragraphs = [" ".join(["word"] * 30) + "." for _ in range(5)]
    document = Document(text="\n\n".join(paragraphs))
    chunks = chunk_documents(
        [document], count_tokens=words, strategy="paragraphs", chunk_tokens=70, overlap_tokens=0
    )
    assert [chunk.tokens for chunk in chunks] == [60, 60, 30]
    assert all(chunk.text.count("\n\n") == chunk.tokens // 30 - 1 for chunk in chunks)


def test_text_without_punctuation_or_spaces_is_still_bounded() -> None:
    document = Document(text="x" * 50_000)
    chunks = chunk_documents(
        [document], count_tokens=lambda t: len(t) // 4 + 1, chunk_tokens=500, overlap_tokens=0
    )
    assert all(chunk.tokens <= 500 for chunk in chunks)
    assert sum(len(chunk.text) for chunk in chunks) == 50_000


def test_chunk_ids_run_across_documents() -> None:
    documents = [Document(name="a", text="one. two."), Document(name="b", text="three.")]
    chunks = chunk_documents(documents, count_tokens=words, chunk_tokens=40, overlap_tokens=0)
    assert [(c.id, c.document_index, c.document_name) for c in chunks] == [(0, 0, "a"), (1, 1, "b")]


def test_fit_chunk_tokens_shrinks_to_the_context() -> None:
    assert fit_chunk_tokens(1000, context_window=8192, reserved_tokens=600) == 1000
    assert fit_chunk_tokens(1000, context_window=1024, reserved_tokens=600) == 424
    with pytest.raises(ValueError, match="chunk_tokens"):
        fit_chunk_tokens(1000, context_window=620, reserved_tokens=600)


def test_bad_chunking_arguments_name_the_field() -> None:
    document = Document(text="text.")
    with pytest.raises(ValueError, match="chunk_overlap"):
        chunk_documents([document], count_tokens=words, chunk_tokens=100, overlap_tokens=100)


def test_retrieval_picks_the_chunk_with_the_keywords() -> None:
    synthetic = make_document(30, words_per_page=150, seed=2)
    chunks = chunk_documents(
        [synthetic.document],
        count_tokens=words,
        strategy="pages",
        chunk_tokens=400,
        overlap_tokens=0,
    )
    fact_chunk = next(chunk.id for chunk in chunks if synthetic.answer in chunk.text)
    retriever = ChunkRetriever(chunks)
    assert retriever.top_k(["access code", "north warehouse"], 3) == [fact_chunk]
    assert retriever.top_k(["zebra"], 3) == []
    assert retriever.top_k([], 3) == []


def test_retrieval_ranks_by_relevance() -> None:
    texts = ["apple pie recipe", "apple apple apple orchard", "banana bread", "apple cider"]
    document = Document(pages=tuple(texts))
    chunks = chunk_documents(
        [document], count_tokens=words, strategy="pages", chunk_tokens=40, overlap_tokens=0
    )
    ranked = ChunkRetriever(chunks).top_k(["apple"], 2)
    assert ranked[0] == 1 and len(ranked) == 2 and 2 not in ranked
