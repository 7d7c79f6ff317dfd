"""Turning files and uploaded bytes into ``Document``s: UTF-8 text, or PDF text by page (pypdf).

Size is checked before anything is read or parsed, so an oversized file is a clear error and never
an out-of-memory: at most ``MAX_DOCUMENT_BYTES`` (16 MiB) per file. The extracted text is then
held to the limits in ``protocols.task``.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

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
    _check_size(len(data), field, name)
    if not data.strip():
        raise DocumentError(field, f"{name} is empty (0 bytes of text)")
    if data.lstrip()[:5] == b"%PDF-" or name.lower().endswith(".pdf"):
        pages = pdf_pages(data, field=field, name=name)
    else:
        pages = decode_text(data, field=field, name=name).split("\f")
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


def pdf_pages(data: bytes, *, field: str, name: str) -> list[str]:
    """The text of each page of a PDF. Raises ``DocumentError`` for corrupt or text-less PDFs."""
    from pypdf import PdfReader

    pages: list[str] = []
    chars = 0
    try:
        # pypdf reports recoverable damage as warnings; they are not errors for us.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = PdfReader(io.BytesIO(data))
            if reader.is_encrypted:
                raise DocumentError(field, f"{name} is an encrypted PDF; decrypt it first")
            count = len(reader.pages)
            if count > MAX_PAGES:
                raise DocumentError(
                    field, f"{name} has {count:,} pages; the limit is {MAX_PAGES:,}"
                )
            for page in reader.pages:
                text = page.extract_text() or ""
                chars += len(text)
                if chars > MAX_DOCUMENT_CHARS:
                    raise DocumentError(
                        field, f"{name} has more than {MAX_DOCUMENT_CHARS:,} characters of text"
                    )
                pages.append(text)
    except DocumentError:
        raise
    except Exception as exc:  # pypdf raises many types on damaged files; all mean "unreadable".
        raise DocumentError(
            field, f"{name} is not a readable PDF ({type(exc).__name__}: {exc})"
        ) from None
    if not pages:
        raise DocumentError(field, f"{name} is not a readable PDF (no pages found)")
    if not any(page.strip() for page in pages):
        raise DocumentError(
            field, f"{name} has no extractable text (a scanned PDF? OCR is not supported)"
        )
    return pages


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
