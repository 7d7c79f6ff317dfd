"""Documents, stored once and referenced by id.

A document's id is derived from its owner and its content (SHA-256), so storing the same document
twice is one idempotent ``SET NX`` and needs no lookup first: it is written by the same script
that creates the task using it. Knowing an id gives nothing: reads check the owner.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

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

    async def put(self, stored: StoredDocument, ttl_s: int | None = None) -> None:
        name = keys.document(stored.id)
        if not await self.redis.set(name, stored.payload(), nx=True, ex=ttl_s) and ttl_s:
            await self.redis.expire(name, ttl_s)  # stored before: used again now

    @staticmethod
    def queue_touch(pipe: Any, document_ids: Sequence[str], ttl_s: int) -> None:
        """Documents just used by a task expire ``ttl_s`` from now (unused that long: gone)."""
        for document_id_ in document_ids:
            pipe.expire(keys.document(document_id_), ttl_s)

    async def touch(self, document_ids: Sequence[str], ttl_s: int) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            self.queue_touch(pipe, document_ids, ttl_s)
            await pipe.execute()

    async def delete(self, stored: StoredDocument) -> bool:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.document(stored.id))
            pipe.zrem(keys.documents_of(stored.owner), stored.id)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    async def count_bytes(self, owner: str, documents: Sequence[StoredDocument]) -> None:
        """Count ``documents`` against ``owner``'s storage quota."""
        if documents:
            mapping = {doc.id: len(doc.payload().encode()) for doc in documents}
            await self.redis.zadd(keys.documents_of(owner), mapping)

    async def stored_bytes(self, owner: str) -> int:
        """The bytes of ``owner``'s documents still stored (expired ones are pruned)."""
        name = keys.documents_of(owner)
        members = cast(
            "list[tuple[str, float]]", await self.redis.zrange(name, 0, -1, withscores=True)
        )
        if not members:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for document_id_, _ in members:
                pipe.exists(keys.document(document_id_))
            present = await pipe.execute()
        gone = [member for (member, _), here in zip(members, present, strict=True) if not here]
        if gone:
            await self.redis.zrem(name, *gone)
        return int(sum(size for (_, size), here in zip(members, present, strict=True) if here))

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
