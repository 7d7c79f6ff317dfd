"""Tasks, options and documents: valid input is accepted, bad input fails with a clear,
field-named error and never exhausts memory."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from protocols.documents import (
    MAX_DOCUMENT_BYTES,
    DocumentError,
    document_from_bytes,
    load_document,
)
from protocols.synthetic import make_document, pdf_bytes
from protocols.task import MAX_DOCUMENT_CHARS, Document, Options, Task


def test_text_document_splits_pages_on_form_feeds() -> None:
    document = Document(name="a.txt", text="first page\fsecond page")
    assert document.pages == ("first page", "second page")
    assert document.text == "first page\n\nsecond page"


def test_task_needs_documents() -> None:
    with pytest.raises(ValidationError, match="documents"):
        Task(question="q?", documents=())


def test_task_needs_a_question() -> None:
    with pytest.raises(ValidationError, match=r"question[\s\S]*the question is empty"):
        Task(question="   ", documents=(Document(text="text"),))


def test_task_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="surprise"):
        Task.model_validate({"question": "q", "documents": [{"text": "t"}], "surprise": 1})


def test_empty_document_text_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"documents\.0[\s\S]*empty"):
        Task.model_validate({"question": "q", "documents": [{"text": ""}]})


def test_document_over_the_limit_is_a_clear_error() -> None:
    with pytest.raises(ValidationError, match="limit"):
        Document(text="x" * (MAX_DOCUMENT_CHARS + 1))


def test_options_name_the_bad_field() -> None:
    with pytest.raises(ValidationError, match="max_rounds"):
        Options(max_rounds=0)
    with pytest.raises(ValidationError, match="chunk_overlap"):
        Options(chunk_tokens=100, chunk_overlap=100)


def test_task_options_override_only_what_they_set() -> None:
    base = Options(max_rounds=2, chunk_tokens=500)
    merged = base.merged(Options(chunk_tokens=300))
    assert (merged.max_rounds, merged.chunk_tokens) == (2, 300)


def test_zero_byte_file_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(DocumentError, match=r"documents\[0\]: empty.txt is empty"):
        load_document(empty)


def test_missing_file_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match=r"documents\[2\]: cannot read"):
        load_document(tmp_path / "nope.txt", field="documents[2]")


def test_fifty_megabyte_file_is_refused_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    with big.open("wb") as handle:  # sparse: 50 MB on paper, nothing written
        handle.truncate(50 * 1000 * 1000)
    with pytest.raises(DocumentError, match="limit is 16 MiB"):
        load_document(big)


def test_oversized_upload_is_refused() -> None:
    with pytest.raises(DocumentError, match="limit"):
        document_from_bytes(b"a" * (MAX_DOCUMENT_BYTES + 1), name="upload.txt")


def test_utf8_text_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("Größe: 4 m.\fPage two.", encoding="utf-8")
    document = load_document(path)
    assert document.name == "notes.txt"
    assert document.pages == ("Größe: 4 m.", "Page two.")


def test_binary_file_is_rejected() -> None:
    with pytest.raises(DocumentError, match="binary"):
        document_from_bytes(b"\x00\x01\x02binary", name="blob.bin")


def test_pdf_keeps_page_boundaries() -> None:
    data = pdf_bytes(["The first page.", "The access code is 4817.", "The end."])
    document = document_from_bytes(data, name="report.pdf")
    assert len(document.pages) == 3
    assert "4817" in document.pages[1]
    assert "4817" not in document.pages[0] + document.pages[2]


def test_corrupt_pdf_is_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match=r"documents\[1\]: broken.pdf is not a readable PDF"):
        document_from_bytes(
            b"%PDF-1.7\n garbage that is no PDF at all", name="broken.pdf", field="documents[1]"
        )


def test_truncated_pdf_is_a_clear_value_error() -> None:
    data = pdf_bytes(["Some text on a page."])
    with pytest.raises(DocumentError, match="documents"):
        document_from_bytes(data[: len(data) // 3], name="cut.pdf")


def test_synthetic_document_plants_its_fact_once() -> None:
    synthetic = make_document(20, seed=3)
    assert len(synthetic.document.pages) == 20
    holding = [i for i, page in enumerate(synthetic.document.pages, 1) if synthetic.answer in page]
    assert holding == [synthetic.facts[0].page]
    assert make_document(20, seed=3).document == synthetic.document
