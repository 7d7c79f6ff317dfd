"""Bounded storage: finished tasks and their event streams expire after MGW_TASK_TTL_S, documents
MGW_DOCUMENT_TTL_S after their last use; documents and finished tasks can be deleted at once, by
their owner or an admin only (real Redis, real TTLs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from gateway_helpers import ADMIN_KEY, CODE_DOC, auth

from service import keys

pytestmark = pytest.mark.timeout(60)
TASK_TTL, DOCUMENT_TTL = 3600, 7200


async def test_finished_tasks_and_unused_documents_expire(make_gateway: Callable[..., Any]) -> None:
    async with make_gateway(task_ttl_s=TASK_TTL, document_ttl_s=DOCUMENT_TTL) as gw:
        key = await gw.new_key()
        files = {"file": ("code.txt", CODE_DOC.encode(), "text/plain")}
        uploaded = await gw.client.post("/v1/documents", files=files, headers=auth(key))
        document_id = uploaded.json()["document_id"]
        redis = gw.store.redis
        assert 0 < await redis.ttl(keys.document(document_id)) <= DOCUMENT_TTL
        body = {
            "protocol": "minions",
            "question": "What is the access code?",
            "documents": [{"document_id": document_id}, {"text": "inline page"}],
            "options": {"chunking": "pages"},
        }
        posted = await gw.client.post("/v1/tasks", json=body, headers=auth(key))
        task_id = posted.json()["id"]
        assert await redis.ttl(keys.task(task_id)) == -1  # kept while it waits or runs
        assert (await gw.wait_for(task_id, key))["status"] == "succeeded"
        assert 0 < await redis.ttl(keys.task(task_id)) <= TASK_TTL
        assert 0 < await redis.ttl(keys.task_events(task_id)) <= TASK_TTL
        view = (await gw.client.get(f"/v1/tasks/{task_id}", headers=auth(key))).json()
        assert view["result"]["stats"]["documents"] == 2
        # Both documents (the uploaded and the inline one) expire after their last use.
        stored = await redis.keys(keys.document("*"))
        assert len(stored) == 2
        for name in stored:
            assert 0 < await redis.ttl(name) <= DOCUMENT_TTL


async def test_an_expired_task_leaves_the_lists_and_its_idempotency_key_expires_too(
    make_gateway: Callable[..., Any],
) -> None:
    async with make_gateway(task_ttl_s=TASK_TTL) as gw:
        key = await gw.new_key()
        body = {
            "protocol": "local_only",
            "question": "What is the code?",
            "documents": [{"text": CODE_DOC}],
        }
        headers = {**auth(key), "Idempotency-Key": "once"}
        task_id = (await gw.client.post("/v1/tasks", json=body, headers=headers)).json()["id"]
        assert (await gw.wait_for(task_id, key))["status"] == "succeeded"
        redis = gw.store.redis
        [idem] = await redis.keys("mgw:idem:*")
        assert 0 < await redis.ttl(idem) <= TASK_TTL
        record = await gw.store.tasks.get(task_id)
        assert record is not None
        index = keys.tasks_of(record.key_id)
        assert await redis.zscore(index, task_id) is not None
        await redis.delete(keys.task(task_id))  # as its TTL does
        listed = (await gw.client.get("/v1/tasks", headers=auth(key))).json()
        assert [task["id"] for task in listed["data"]] == []
        assert await redis.zscore(index, task_id) is None  # the listing pruned it


async def test_documents_and_finished_tasks_are_deleted_by_owner_or_admin_only(
    make_gateway: Callable[..., Any],
) -> None:
    async with make_gateway() as gw:
        owner, stranger = await gw.new_key(), await gw.new_key()
        files = {"file": ("code.txt", CODE_DOC.encode(), "text/plain")}
        first = (await gw.client.post("/v1/documents", files=files, headers=auth(owner))).json()
        other = {"file": ("other.txt", b"Another text.", "text/plain")}
        second = (await gw.client.post("/v1/documents", files=other, headers=auth(owner))).json()
        path = f"/v1/documents/{first['document_id']}"
        assert (await gw.client.delete(path, headers=auth(stranger))).status_code == 404
        assert (await gw.client.delete(path, headers=auth(owner))).status_code == 204
        assert (await gw.client.delete(path, headers=auth(owner))).status_code == 404
        by_admin = f"/v1/documents/{second['document_id']}"
        assert (await gw.client.delete(by_admin, headers=auth(ADMIN_KEY))).status_code == 204
        assert await gw.store.redis.keys(keys.document("*")) == []

        task = {"protocol": "local_only", "question": "Code?", "documents": [{"text": "4817"}]}
        slow = {**task, "question": "SLOW code?"}
        running = (await gw.client.post("/v1/tasks", json=slow, headers=auth(owner))).json()
        refused = await gw.client.delete(
            f"/v1/tasks/{running['id']}", params={"purge": "true"}, headers=auth(owner)
        )
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["param"] == "purge"
        await gw.client.delete(f"/v1/tasks/{running['id']}", headers=auth(owner))  # cancel

        done = (await gw.client.post("/v1/tasks", json=task, headers=auth(owner))).json()
        await gw.wait_for(done["id"], owner)
        purge = {"purge": "true"}
        url = f"/v1/tasks/{done['id']}"
        assert (
            await gw.client.delete(url, params=purge, headers=auth(stranger))
        ).status_code == 404
        purged = await gw.client.delete(url, params=purge, headers=auth(owner))
        assert purged.status_code == 200 and purged.json()["status"] == "succeeded"
        assert (await gw.client.get(url, headers=auth(owner))).status_code == 404
        assert not await gw.store.redis.exists(keys.task(done["id"]), keys.task_events(done["id"]))
        listed = (await gw.client.get("/v1/tasks", headers=auth(owner))).json()["data"]
        assert done["id"] not in [t["id"] for t in listed]


async def test_a_keys_documents_are_held_to_its_storage_quota(
    make_gateway: Callable[..., Any],
) -> None:
    async with make_gateway(key_storage_quota_mb=1) as gw:
        key = await gw.new_key()

        def text(n: int) -> dict[str, Any]:
            return {"file": (f"d{n}.txt", f"{n} ".encode() + b"word " * 80_000, "text/plain")}

        first = await gw.client.post("/v1/documents", files=text(1), headers=auth(key))
        second = await gw.client.post("/v1/documents", files=text(2), headers=auth(key))
        assert first.status_code == second.status_code == 201
        third = await gw.client.post("/v1/documents", files=text(3), headers=auth(key))
        assert third.status_code == 413, third.text
        assert "quota is 1 MiB" in third.json()["error"]["message"]
        inline = {
            "protocol": "local_only",
            "question": "Q?",
            "documents": [{"text": "word " * 80_000}],
        }
        refused = await gw.client.post("/v1/tasks", json=inline, headers=auth(key))
        assert refused.status_code == 413 and refused.json()["error"]["param"] == "documents"
        # Deleting one makes room again; nothing half-written meanwhile.
        deleted = await gw.client.delete(
            f"/v1/documents/{first.json()['document_id']}", headers=auth(key)
        )
        assert deleted.status_code == 204
        again = await gw.client.post("/v1/documents", files=text(3), headers=auth(key))
        assert again.status_code == 201, again.text
        # An admin key is not held to the quota.
        admin = await gw.client.post("/v1/documents", files=text(4), headers=auth(ADMIN_KEY))
        assert admin.status_code == 201
