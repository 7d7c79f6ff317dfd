"""Privacy mode through the gateway: key and gateway defaults, a task's own choice, chat
``minions_options``, what is stored and streamed, the metric, and a bad config at startup."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gateway_helpers import ADMIN_KEY, GatedEngine, Gateway, auth, local_reply
from pydantic import ValidationError
from support.private_data import (
    NAME,
    PAGES,
    PHONE,
    PLACEHOLDER,
    QUESTION,
    LeakCheckingRemote,
    leaks_in,
    placeholder,
)
from support.scripted_engine import ScriptedEngine

from gateway.app import create_app
from service import keys
from service.engines import EngineSet
from service.settings import Settings
from service.store import Store


def private_engines() -> EngineSet:
    local = ScriptedEngine(default=local_reply, model="smollm2-135m-instruct", context_window=8192)
    remote = LeakCheckingRemote(
        # remote_only reads the (pseudonymized) document and answers with the phone placeholder.
        default=lambda request: f"It is {placeholder(request, 'PHONE')}.",
        model="gpt-4o",
        context_window=16_384,
    )
    return EngineSet(local=local, remote=remote, remote_stand_in=False)


def body(**options: Any) -> dict[str, Any]:
    return {
        "protocol": "remote_only",
        "question": QUESTION,
        "documents": [{"text": "\f".join(PAGES), "name": "intake.txt"}],
        "options": options,
    }


async def run_task(gw: Gateway, key: str, **options: Any) -> dict[str, Any]:
    response = await gw.client.post("/v1/tasks", json=body(**options), headers=auth(key))
    assert response.status_code == 202, response.text
    # The first private task of the process loads Presidio and spaCy (seconds, more on a busy
    # machine): a generous limit, since this test is about what crosses, not how fast.
    task = await gw.wait_for(response.json()["id"], key, limit_s=90.0)
    assert task["status"] == "succeeded", task
    return task


async def test_a_keys_default_pseudonymizes_its_tasks_and_nothing_of_the_mapping_is_stored(
    make_gateway: Callable[..., Any], store: Store
) -> None:
    engines = private_engines()
    async with make_gateway(engines) as gw:
        key = await gw.new_key(privacy="pseudonymize")
        listed = await gw.client.get("/v1/admin/keys", headers=auth(ADMIN_KEY))
        assert "pseudonymize" in [k["privacy"] for k in listed.json()["data"]]
        task = await run_task(gw, key)
        metrics = (await gw.client.get("/metrics", headers=auth(ADMIN_KEY))).text

    assert engines.remote.leaks == []  # type: ignore[attr-defined]
    assert task["result"]["answer"] == f"It is {PHONE}."  # restored locally
    privacy = task["result"]["privacy"]
    assert privacy["mode"] == "pseudonymize" and privacy["ner_model"]
    assert {"PERSON", "PHONE_NUMBER", "EMAIL_ADDRESS", "US_SSN", "CREDIT_CARD"} <= set(
        privacy["entities"]
    )
    assert any("whole document was pseudonymized" in note for note in privacy["notes"])
    assert leaks_in(json.dumps(privacy)) == []
    # What Redis holds: the record's audit trail has placeholders only; the events stream, the
    # local side's progress, never a placeholder (so no value-placeholder pair anywhere).
    record = await store.tasks.get(task["id"])
    assert record is not None and record.request["options"]["privacy"] == "pseudonymize"
    stored_events = json.dumps(await store.redis.xrange(keys.task_events(task["id"])), default=str)
    assert PLACEHOLDER.findall(stored_events) == []
    assert 'mgw_pii_entities_total{type="PHONE_NUMBER"} 1.0' in metrics


async def test_the_gateway_default_applies_unless_the_task_chooses(
    make_gateway: Callable[..., Any],
) -> None:
    engines = private_engines()
    async with make_gateway(engines, privacy_default="pseudonymize") as gw:
        key = await gw.new_key()
        private = await run_task(gw, key)
        assert private["result"]["privacy"]["mode"] == "pseudonymize"
        assert engines.remote.leaks == []  # type: ignore[attr-defined]
        # The task turns it off: the leak-checking remote sees the values and fails the run.
        response = await gw.client.post("/v1/tasks", json=body(privacy="off"), headers=auth(key))
        task = await gw.wait_for(response.json()["id"], key)
    assert task["status"] == "failed"
    assert NAME in engines.remote.leaks  # type: ignore[attr-defined]


async def test_chat_minions_options_choose_privacy(make_gateway: Callable[..., Any]) -> None:
    engines = private_engines()
    async with make_gateway(engines) as gw:
        key = await gw.new_key()
        response = await gw.client.post(
            "/v1/chat/completions",
            json={
                "model": "remote",
                "messages": [
                    {"role": "system", "content": "\n".join(PAGES)},
                    {"role": "user", "content": QUESTION},
                ],
                "minions_options": {"privacy": "pseudonymize"},
            },
            headers=auth(key),
        )
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["choices"][0]["message"]["content"] == f"It is {PHONE}."
    assert reply["minions"]["privacy"]["entities"]["PERSON"] >= 1
    assert "crossed" not in reply["minions"]["privacy"]
    assert NAME not in json.dumps(reply["minions"])


async def test_an_unknown_privacy_mode_is_refused_naming_the_field(gw: Gateway) -> None:
    key = await gw.new_key()
    response = await gw.client.post("/v1/tasks", json=body(privacy="maybe"), headers=auth(key))
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "options.privacy"


def test_a_broken_privacy_config_is_a_startup_error(tmp_path: Path) -> None:
    config = tmp_path / "privacy.toml"
    config.write_text("[[recognizers]]\nentity = \"MRN\"\npatterns = ['MRN(']\n")
    with pytest.raises(ValidationError, match=r"privacy_config[\s\S]*recognizers.0.patterns"):
        Settings(privacy_config=config, _env_file=None)  # type: ignore[call-arg]


async def test_a_missing_ner_pipeline_stops_the_gateway_at_startup(
    tmp_path: Path, make_settings: Callable[..., Settings], store: Store
) -> None:
    config = tmp_path / "privacy.toml"
    config.write_text('ner_model = "en_not_installed"\n')
    settings = make_settings(admin_key=ADMIN_KEY, privacy_config=config)
    app = create_app(settings, engines=private_engines(), store=store)
    with pytest.raises(ValueError, match="ner_model: the spaCy pipeline 'en_not_installed'"):
        async with app.router.lifespan_context(app):
            pass


async def test_a_restarted_private_task_reuses_its_checkpointed_replies_and_restores_them(
    make_gateway: Callable[..., Any], store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A first run that keeps its recorded remote replies (as a run that died would).
    monkeypatch.setattr(store.tasks, "queue_forget_checkpoints", lambda pipe, task_id: None)
    first_engines = private_engines()
    async with make_gateway(first_engines, runner_concurrency=1) as gw:
        key = await gw.new_key(privacy="pseudonymize")
        task_id = (await gw.client.post("/v1/tasks", json=body(), headers=auth(key))).json()["id"]
        first = await gw.wait_for(task_id, key, limit_s=90.0)
    assert first["status"] == "succeeded", first
    first_remote = first_engines.remote
    assert isinstance(first_remote, LeakCheckingRemote)
    assert first_remote.calls and first_remote.leaks == []
    sent = [[m.content for m in request.messages] for request in first_remote.calls]
    assert PLACEHOLDER.search(json.dumps(sent))  # what was checkpointed is pseudonymized
    assert await store.redis.hlen(keys.task_remote_calls(task_id)) == len(sent)
    monkeypatch.undo()
    # The runner died mid-task: the record says running, a dead consumer holds its entry.
    await store.tasks.update(task_id, {"status": "running", "result": None})
    await store.redis.xadd(keys.TASK_STREAM, {"task": task_id})
    await store.redis.xreadgroup(keys.RUNNER_GROUP, "dead-runner", {keys.TASK_STREAM: ">"})
    second_engines = private_engines()
    async with make_gateway(second_engines, runner_heartbeat_s=0.1) as gw:
        task = await gw.wait_for(task_id, ADMIN_KEY, limit_s=90.0)
        reclaimed = gw.services.runner.reclaimed
    assert task["status"] == "succeeded", task
    assert reclaimed == 1
    # A new process's mapping, rebuilt from the documents, made the same requests: every reply
    # came from the checkpoint, and the answer is restored from it with the real value.
    assert second_engines.remote.calls == []  # type: ignore[attr-defined]
    assert task["result"]["answer"] == f"It is {PHONE}."
    crossed = [[m["content"] for m in request] for request in task["result"]["privacy"]["crossed"]]
    assert crossed == sent


@pytest.mark.parametrize("ending", ["failed", "cancelled"])
async def test_the_values_that_crossed_are_counted_when_the_task_fails_or_is_cancelled(
    ending: str, make_gateway: Callable[..., Any]
) -> None:
    # The remote receives the pseudonymized document, then fails, or hangs until cancelled.
    remote = GatedEngine(default="It is done.", model="gpt-4o", context_window=16_384)
    if ending == "failed":
        remote.fail_on, remote.hang_on = "<PHONE_", None
    else:
        remote.hang_on = "<PHONE_"
    engines = EngineSet(local=private_engines().local, remote=remote, remote_stand_in=False)
    async with make_gateway(engines) as gw:
        key = await gw.new_key(privacy="pseudonymize")
        response = await gw.client.post("/v1/tasks", json=body(), headers=auth(key))
        task_id = response.json()["id"]
        if ending == "cancelled":
            await asyncio.wait_for(remote.started.wait(), 90.0)
            await gw.client.delete(f"/v1/tasks/{task_id}", headers=auth(key))
        task = await gw.wait_for(task_id, key, limit_s=90.0)
        metrics = (await gw.client.get("/metrics", headers=auth(ADMIN_KEY))).text
    assert task["status"] == ending, task
    assert remote.calls or remote.started.is_set()
    for entity in ("PERSON", "PHONE_NUMBER", "EMAIL_ADDRESS", "US_SSN", "CREDIT_CARD"):
        assert f'mgw_pii_entities_total{{type="{entity}"}} 1.0' in metrics, entity


async def test_an_admin_changes_a_keys_privacy_default(make_gateway: Callable[..., Any]) -> None:
    engines = private_engines()
    async with make_gateway(engines) as gw:
        key = await gw.new_key()
        key_id = key.split("_")[1]
        # Verified (and cached) under its old default before the change.
        assert (await gw.client.get("/v1/models", headers=auth(key))).status_code == 200
        path = f"/v1/admin/keys/{key_id}"
        changed = await gw.client.patch(
            path, json={"privacy": "pseudonymize"}, headers=auth(ADMIN_KEY)
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["privacy"] == "pseudonymize" and changed.json()["id"] == key_id
        task = await run_task(gw, key)  # the task does not choose: the key's new default
        assert task["result"]["privacy"]["mode"] == "pseudonymize"
        assert engines.remote.leaks == []  # type: ignore[attr-defined]

        bad = await gw.client.patch(path, json={"privacy": "maybe"}, headers=auth(ADMIN_KEY))
        assert bad.status_code == 422 and bad.json()["error"]["param"] == "privacy"
        empty = await gw.client.patch(path, json={}, headers=auth(ADMIN_KEY))
        assert empty.status_code == 422 and empty.json()["error"]["param"] == "privacy"
        refused = await gw.client.patch(path, json={"privacy": "off"}, headers=auth(key))
        assert refused.status_code == 403
        missing = await gw.client.patch(
            "/v1/admin/keys/nosuchkey", json={"privacy": "off"}, headers=auth(ADMIN_KEY)
        )
        assert missing.status_code == 404 and missing.json()["error"]["param"] == "key_id"
        cleared = await gw.client.patch(path, json={"privacy": None}, headers=auth(ADMIN_KEY))
        assert cleared.status_code == 200 and cleared.json()["privacy"] is None
        listed = (await gw.client.get("/v1/admin/keys", headers=auth(ADMIN_KEY))).json()["data"]
    assert [k["privacy"] for k in listed if k["id"] == key_id] == [None]
    assert [k["privacy"] for k in listed if k["id"] == "nosuchkey"] == []
