"""Turning files and uploaded bytes into ``Document``s: UTF-8 text, or PDF text by page (pypdf).

Size is checked before anything is read or parsed, so an oversized file is a clear error and never
an out-of-memory: at most ``MAX_DOCUMENT_BYTES`` (16 MiB) per file. PDFs are parsed in a child
process under a work budget (``protocols.pdf_sandbox``: time, memory, content bytes). The
extracted text is then held to the limits in ``protocols.task``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

from protocols.pdf_sandbox import (
    PdfBudgetExceeded,
    PdfError,
    PdfLimits,
    PdfSandbox,
    extract_pages_sync,
)
from protocols.task import MAX_DOCUMENT_CHARS, MAX_PAGES, Document

logger = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
# More undecodable bytes than this share means the file is binary, not text in another encoding.
_MAX_REPLACEMENT_SHARE = 0.01


class DocumentError(ValueError):
    """A document could not be read. The message starts with the field it concerns."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class DocumentTooCostly(DocumentError):
    """Extracting the document's text needs more work than its budget allows."""


def load_document(path: Path, *, field: str = "documents[0]") -> Document:
    """Read a text or PDF file into a ``Document`` named after the file."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DocumentError(field, f"cannot read {path}: {exc.strerror or exc}") from None
    _check_size(size, field, path.name)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DocumentError(field, f"cannot read {path}: {exc.strerror or exc}") from None
    return document_from_bytes(data, name=path.name, field=field)


def document_from_bytes(data: bytes, *, name: str, field: str = "documents[0]") -> Document:
    """A ``Document`` from raw bytes: PDF when the bytes say so (or the name ends in .pdf)."""
    if _is_pdf(data, name, field):
        pages = pdf_pages(data, field=field, name=name)
    else:
        pages = decode_text(data, field=field, name=name).split("\f")
    return _document(pages, name, field)


async def document_from_bytes_async(
    sandbox: PdfSandbox, data: bytes, *, name: str, field: str
) -> Document:
    """``document_from_bytes`` for the event loop: PDFs in ``sandbox`` (cancelling the caller
    kills the parse), text decoded in a worker thread."""
    if _is_pdf(data, name, field):
        pages = await pdf_pages_async(sandbox, data, field=field, name=name)
    else:
        text = await asyncio.to_thread(decode_text, data, field=field, name=name)
        pages = text.split("\f")
    return _document(pages, name, field)


def _is_pdf(data: bytes, name: str, field: str) -> bool:
    _check_size(len(data), field, name)
    if not data.strip():
        raise DocumentError(field, f"{name} is empty (0 bytes of text)")
    return data.lstrip()[:5] == b"%PDF-" or name.lower().endswith(".pdf")


def _document(pages: list[str], name: str, field: str) -> Document:
    try:
        return Document(name=name[:256] or "document", pages=tuple(pages))
    except ValueError as exc:
        raise DocumentError(field, f"{name}: {_first_error(exc)}") from None


def decode_text(data: bytes, *, field: str, name: str) -> str:
    if b"\x00" in data[:8192]:
        raise DocumentError(field, f"{name} is a binary file, not text or PDF")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
    if text.count("\ufffd") > _MAX_REPLACEMENT_SHARE * max(len(text), 1):
        raise DocumentError(field, f"{name} is not UTF-8 text (nor a PDF)")
    logger.warning("%s: %s has a few bytes that are not UTF-8; they were replaced", field, name)
    return text


def pdf_pages(data: bytes, *, field: str, name: str, limits: PdfLimits | None = None) -> list[str]:
    """The text of each page of a PDF, parsed in a child process under a work budget
    (``protocols.pdf_sandbox``). Raises ``DocumentTooCostly`` past the budget and
    ``DocumentError`` for corrupt or text-less PDFs."""
    try:
        return extract_pages_sync(data, name, pdf_limits(limits))
    except PdfError as exc:
        raise document_error(exc, field) from None


async def pdf_pages_async(sandbox: PdfSandbox, data: bytes, *, field: str, name: str) -> list[str]:
    """``pdf_pages`` for the event loop: cancelling the caller kills the parsing child."""
    try:
        return await sandbox.extract_pages(data, name)
    except PdfError as exc:
        raise document_error(exc, field) from None


def pdf_limits(limits: PdfLimits | None = None) -> PdfLimits:
    """The budget with this package's own page and text limits."""
    base = limits or PdfLimits()
    return dataclasses.replace(base, max_pages=MAX_PAGES, max_chars=MAX_DOCUMENT_CHARS)


def document_error(exc: PdfError, field: str) -> DocumentError:
    if isinstance(exc, PdfBudgetExceeded):
        return DocumentTooCostly(field, str(exc))
    return DocumentError(field, str(exc))


def _check_size(size: int, field: str, name: str) -> None:
    if size > MAX_DOCUMENT_BYTES:
        raise DocumentError(
            field,
            f"{name} is {size / 2**20:.1f} MiB; the limit is {MAX_DOCUMENT_BYTES // 2**20} MiB "
            "per document (split it into several documents)",
        )


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return str(first.get("msg", exc))
    return str(exc)
