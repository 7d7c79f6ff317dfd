"""Documents, stored once and referenced by id.

A document's id is derived from its owner and its content (SHA-256), so storing the same document
twice is one idempotent ``SET NX`` and needs no lookup first: it is written by the same script
that creates the task using it. Knowing an id gives nothing: reads check the owner.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from protocols.task import Document
from service import keys


def document_id(owner: str, document: Document) -> str:
    digest = hashlib.sha256()
    for part in (owner, document.name, *document.pages):
        digest.update(part.encode())
        digest.update(b"\x00\f")
    return f"doc_{digest.hexdigest()[:40]}"


@dataclass(frozen=True, slots=True)
class StoredDocument:
    id: str
    owner: str
    document: Document
    tokens: int
    created_at: float

    @classmethod
    def new(cls, owner: str, document: Document, tokens: int) -> StoredDocument:
        return cls(document_id(owner, document), owner, document, tokens, time.time())

    @property
    def pages(self) -> int:
        return len(self.document.pages)

    def payload(self) -> str:
        return json.dumps(
            {
                "owner": self.owner,
                "tokens": self.tokens,
                "created_at": self.created_at,
                "document": self.document.model_dump(mode="json"),
            }
        )

    @classmethod
    def from_payload(cls, document_id_: str, raw: str) -> StoredDocument:
        data: dict[str, Any] = json.loads(raw)
        return cls(
            id=document_id_,
            owner=data["owner"],
            document=Document.model_validate(data["document"]),
            tokens=int(data["tokens"]),
            created_at=float(data["created_at"]),
        )


class DocumentStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def put(self, stored: StoredDocument) -> None:
        await self.redis.set(keys.document(stored.id), stored.payload(), nx=True)

    async def get(self, document_id_: str) -> StoredDocument | None:
        raw = await self.redis.get(keys.document(document_id_))
        return None if raw is None else StoredDocument.from_payload(document_id_, str(raw))

    async def get_many(self, document_ids: list[str]) -> list[StoredDocument | None]:
        if not document_ids:
            return []
        raws = await self.redis.mget([keys.document(i) for i in document_ids])
        return [
            None if raw is None else StoredDocument.from_payload(document_id_, str(raw))
            for document_id_, raw in zip(document_ids, raws, strict=True)
        ]
