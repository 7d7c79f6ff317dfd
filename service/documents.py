"""Turning request documents (text, base64 PDF, stored ids, uploads) into stored ``Document``s,
within the gateway's limits. PDF parsing and tokenizing large texts run in a worker thread."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

import anyio.to_thread
from pydantic import ValidationError

from engines.base import Engine
from protocols.documents import (
    DocumentError,
    DocumentTooCostly,
    document_from_bytes_async,
    pdf_pages_async,
)
from protocols.pdf_sandbox import PdfSandbox
from protocols.task import Document
from service.abandon import Abandoned, unless_abandoned
from service.errors import InvalidRequest, NotFound, PayloadTooLarge
from service.schemas import DocumentInput
from service.settings import Settings
from service.store import ApiKey, Store, StoredDocument

_THREAD_CHARS = 200_000  # tokenize texts longer than this off the event loop
PDF_MAGIC = b"%PDF-"


class DocumentService:
    def __init__(self, store: Store, local: Engine, settings: Settings) -> None:
        self.store = store
        self.local = local
        self.settings = settings
        self.pdf_sandbox = PdfSandbox(settings.pdf_limits())

    async def count_tokens(self, document: Document) -> int:
        text = "\n\n".join(document.pages)
        if len(text) > _THREAD_CHARS:
            return await anyio.to_thread.run_sync(self.local.count_tokens, text)
        return self.local.count_tokens(text)

    async def prepare(
        self, owner: ApiKey, document: Document, param: str = "file"
    ) -> StoredDocument:
        """The document counted and checked against the limits; stored by the caller."""
        tokens = await self.count_tokens(document)
        self.check_tokens(tokens, param)
        return StoredDocument.new(owner.id, document, tokens)

    def check_tokens(self, tokens: int, param: str) -> None:
        limit = self.settings.max_document_tokens
        if tokens > limit:
            raise PayloadTooLarge(
                f"{param}: the documents have {tokens:,} tokens; the limit is {limit:,}",
                param=param,
            )

    async def upload(
        self, owner: ApiKey, data: bytes, filename: str, content_type: str | None
    ) -> StoredDocument:
        claims_pdf = (content_type or "").lower() == "application/pdf" or filename.lower().endswith(
            ".pdf"
        )
        if claims_pdf and not data.lstrip()[:5] == PDF_MAGIC:
            raise InvalidRequest(
                f"file: {filename} claims to be a PDF but is not one (no %PDF- header)",
                param="file",
            )
        try:
            document = await document_from_bytes_async(
                self.pdf_sandbox, data, name=filename, field="file"
            )
        except DocumentError as exc:
            raise _refusal(exc, "file") from None
        stored = await self.prepare(owner, document)
        await self.check_quota(owner, [stored], "file")
        await self.store.documents.put(stored, ttl_s=self.settings.document_ttl_s)
        await self.store.documents.count_bytes(owner.id, [stored])
        return stored

    async def check_quota(
        self, owner: ApiKey, documents: Sequence[StoredDocument], param: str
    ) -> None:
        """``PayloadTooLarge`` (413) when storing ``documents`` would pass the key's quota."""
        if owner.admin or not documents:
            return
        quota = self.settings.key_storage_quota_mb * 2**20
        adding = sum(len(doc.payload().encode()) for doc in documents)
        stored = await self.store.documents.stored_bytes(owner.id)
        if stored + adding > quota:
            raise PayloadTooLarge(
                f"{param}: this key stores {stored / 2**20:.1f} MiB of documents and these add "
                f"{adding / 2**20:.1f} MiB; its quota is {quota / 2**20:g} MiB "
                "(MGW_KEY_STORAGE_QUOTA_MB): delete documents (DELETE /v1/documents/{id}) or wait "
                "for unused ones to expire",
                param=param,
            )

    async def delete(self, owner: ApiKey, document_id: str) -> None:
        """Delete a document now (its owner, or an admin). Tasks still queued with it fail
        ("no longer stored"); finished ones keep their results."""
        stored = await self.store.documents.get(document_id)
        if stored is None or (stored.owner != owner.id and not owner.admin):
            raise NotFound(f"no document {document_id!r}", param="document_id")
        await self.store.documents.delete(stored)

    async def resolve(
        self,
        owner: ApiKey,
        inputs: Sequence[DocumentInput],
        abandoned: Abandoned | None = None,
    ) -> tuple[list[StoredDocument], list[StoredDocument]]:
        """Every input as a stored document. Inline ones are not written yet: the caller queues
        them in the pipeline that creates the task. Returns (all, the inline ones). An inline PDF
        is parsed under its work budget, stopped early once ``abandoned()``."""
        if len(inputs) > self.settings.max_documents:
            raise InvalidRequest(
                f"documents: {len(inputs)} documents; the limit is {self.settings.max_documents}",
                param="documents",
            )
        resolved: list[StoredDocument] = []
        inline: list[StoredDocument] = []
        for index, item in enumerate(inputs):
            param = f"documents.{index}"
            if item.document_id is not None:
                resolved.append(await self.by_id(owner, item.document_id, param))
            else:
                parsing = self._parse(item, index, param)
                document = await (
                    unless_abandoned(abandoned, parsing) if item.pdf_base64 else parsing
                )
                inline.append(await self.prepare(owner, document, param))
                resolved.append(inline[-1])
        self.check_tokens(sum(doc.tokens for doc in resolved), "documents")
        await self.check_quota(owner, inline, "documents")
        return resolved, inline

    async def by_id(self, owner: ApiKey, document_id: str, param: str) -> StoredDocument:
        stored = await self.store.documents.get(document_id)
        if stored is None or (stored.owner != owner.id and not owner.admin):
            raise NotFound(
                f"{param}.document_id: no document {document_id!r}", param=f"{param}.document_id"
            )
        return stored

    async def _parse(self, item: DocumentInput, index: int, param: str) -> Document:
        name = item.name or f"document-{index + 1}"
        try:
            if item.text is not None:
                return Document.model_validate({"name": name, "text": item.text})
            assert item.pdf_base64 is not None
            data = _b64decode(item.pdf_base64, f"{param}.pdf_base64")
            if data.lstrip()[:5] != PDF_MAGIC:
                raise InvalidRequest(
                    f"{param}.pdf_base64: the data is not a PDF (no %PDF- header)",
                    param=f"{param}.pdf_base64",
                )
            pages = await pdf_pages_async(
                self.pdf_sandbox, data, field=f"{param}.pdf_base64", name=name
            )
            return Document(name=name, pages=tuple(pages))
        except DocumentError as exc:
            raise _refusal(exc, exc.field) from None
        except ValidationError as exc:
            first = exc.errors(include_input=False)[0]
            raise InvalidRequest(f"{param}: {first['msg']}", param=param) from None


def _refusal(exc: DocumentError, param: str) -> InvalidRequest | PayloadTooLarge:
    """Too costly to parse: 413, like a document over the size limit; unreadable: 422."""
    if isinstance(exc, DocumentTooCostly):
        return PayloadTooLarge(str(exc), param=param)
    return InvalidRequest(str(exc), param=param)


def _b64decode(value: str, param: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{param}: not valid base64", param=param) from None
