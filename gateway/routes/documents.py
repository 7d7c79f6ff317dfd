"""``/v1/documents``: upload a PDF or text file once, then reference it by id."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Request, Response, UploadFile

from gateway.auth import CurrentKey
from gateway.deps import ServicesDep
from protocols.documents import MAX_DOCUMENT_BYTES
from service.abandon import unless_abandoned
from service.errors import InvalidRequest, PayloadTooLarge
from service.schemas import DocumentCreated, ErrorEnvelope

router = APIRouter(prefix="/v1/documents", tags=["documents"])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope} for code in (401, 404, 413, 422, 429, 507)
}


@router.post("", status_code=201, response_model=DocumentCreated, responses=ERRORS)
async def upload_document(
    file: Annotated[UploadFile, File(description="a PDF or UTF-8 text file")],
    key: CurrentKey,
    services: ServicesDep,
    request: Request,
) -> DocumentCreated:
    data = await file.read(MAX_DOCUMENT_BYTES + 1)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise PayloadTooLarge(
            f"file: over the limit of {MAX_DOCUMENT_BYTES // 2**20} MiB per document",
            param="file",
        )
    if not data:
        raise InvalidRequest("file: the file is empty", param="file")
    name = (file.filename or "document")[:256]
    # A PDF is parsed in a child process under a work budget; a client that leaves stops it.
    stored = await unless_abandoned(
        request.is_disconnected, services.documents.upload(key, data, name, file.content_type)
    )
    return DocumentCreated(
        document_id=stored.id, name=stored.document.name, pages=stored.pages, tokens=stored.tokens
    )


@router.delete("/{document_id}", status_code=204, responses=ERRORS)
async def delete_document(document_id: str, key: CurrentKey, services: ServicesDep) -> Response:
    """Delete a document now (its owner or an admin; else 404). Unused documents are deleted
    MGW_DOCUMENT_TTL_S after their last use otherwise."""
    await services.documents.delete(key, document_id)
    return Response(status_code=204)
