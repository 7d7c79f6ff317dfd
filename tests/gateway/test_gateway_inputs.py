"""Bad input gets a clear error in the envelope with the right status, and never a 5xx."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from gateway_helpers import CODE_DOC, Gateway, auth

from protocols.synthetic import pdf_bytes

GOOD = {"protocol": "local_only", "question": "What is the code?", "documents": [{"text": "x"}]}


def with_(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


async def post(gw: Gateway, key: str, body: Any = None, **kwargs: Any) -> Any:
    return await gw.client.post("/v1/tasks", json=body, headers=auth(key), **kwargs)


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (with_(protocol="nope"), 422, "protocol"),
        (with_(question=7), 422, "question"),
        (with_(question="   "), 422, "question"),
        (with_(documents=[]), 422, "documents"),
        (with_(documents="text"), 422, "documents"),
        (with_(documents=[{"text": "a", "pdf_base64": "b"}]), 422, "documents.0"),
        (with_(documents=[{"text": "   "}]), 422, "documents.0"),
        (with_(documents=[{"pdf_base64": "not base64!!"}]), 422, "documents.0.pdf_base64"),
        (
            with_(documents=[{"pdf_base64": base64.b64encode(b"plain text").decode()}]),
            422,
            "documents.0.pdf_base64",
        ),
        (
            with_(documents=[{"pdf_base64": base64.b64encode(b"%PDF-1.7 junk").decode()}]),
            422,
            "documents.0.pdf_base64",
        ),
        (with_(options={"max_rounds": 0}), 422, "options.max_rounds"),
        (with_(options={"chunk_tokens": 64, "chunk_overlap": 64}), 422, "options"),
        (with_(options={"unknown": 1}), 422, "options.unknown"),
        (with_(options={"remote_model": "gpt-5-turbo-max"}), 422, "options.remote_model"),
        (with_(extra_field=1), 422, "extra_field"),
        (with_(documents=[{"document_id": "doc_missing"}]), 404, "documents.0.document_id"),
        (with_(documents=[{"text": "a"}] * 17), 422, "documents"),
    ],
)
async def test_bad_task_bodies(gw: Gateway, body: Any, status: int, param: str) -> None:
    key = await gw.new_key()
    response = await post(gw, key, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    assert error["message"] and error["type"]


async def test_malformed_json_and_wrong_content(gw: Gateway) -> None:
    key = await gw.new_key()
    headers = auth(key) | {"Content-Type": "application/json"}
    response = await gw.client.post("/v1/tasks", content=b'{"protocol": ', headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_json"
    response = await gw.client.post("/v1/tasks", content=b"[1, 2]", headers=headers)
    assert response.status_code == 422 and "error" in response.json()
    response = await gw.client.get("/v1/tasks", params={"limit": 0}, headers=auth(key))
    assert response.status_code == 422 and response.json()["error"]["param"] == "limit"
    response = await gw.client.get("/v1/tasks", params={"status": "odd"}, headers=auth(key))
    assert response.status_code == 422
    response = await gw.client.get("/v1/tasks/task_nope", headers=auth(key))
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found"


async def test_oversize_body_and_too_many_tokens(make_gateway: Callable[..., Any]) -> None:
    async with make_gateway(max_body_bytes=2000, max_document_tokens=50) as gw:
        key = await gw.new_key()
        big = with_(documents=[{"text": "word " * 1000}])
        response = await post(gw, key, big)
        assert response.status_code == 413
        assert response.json()["error"]["type"] == "payload_too_large"
        long = with_(documents=[{"text": "word " * 60}])
        response = await post(gw, key, long)
        assert response.status_code == 413 and response.json()["error"]["param"] == "documents.0"
        many = with_(documents=[{"text": "word " * 30}, {"text": "other " * 30}])
        response = await post(gw, key, many)
        assert response.status_code == 413 and response.json()["error"]["param"] == "documents"
        # A streamed body without Content-Length is cut off too.

        async def chunks() -> Any:
            for _ in range(10):
                yield b" " * 500

        response = await gw.client.post(
            "/v1/tasks",
            content=chunks(),
            headers=auth(key) | {"Content-Type": "application/json"},
        )
        assert response.status_code == 413


async def test_uploads_pdf_text_and_liars(gw: Gateway) -> None:
    key = await gw.new_key()
    pdf = pdf_bytes(["The first page.", "The access code is 4817.", "The end."])
    response = await gw.client.post(
        "/v1/documents", files={"file": ("r.pdf", pdf, "application/pdf")}, headers=auth(key)
    )
    assert response.status_code == 201, response.text
    assert response.json()["pages"] == 3
    fake = await gw.client.post(
        "/v1/documents",
        files={"file": ("r.pdf", CODE_DOC.encode(), "application/pdf")},
        headers=auth(key),
    )
    assert fake.status_code == 422 and "claims to be a PDF" in fake.json()["error"]["message"]
    broken = await gw.client.post(
        "/v1/documents",
        files={"file": ("r.pdf", b"%PDF-1.7\n garbage", "application/pdf")},
        headers=auth(key),
    )
    assert broken.status_code == 422 and broken.json()["error"]["param"] == "file"
    binary = await gw.client.post(
        "/v1/documents",
        files={"file": ("x.bin", b"\x00\x01\x02" * 100, "application/octet-stream")},
        headers=auth(key),
    )
    assert binary.status_code == 422
    missing = await gw.client.post("/v1/documents", headers=auth(key))
    assert missing.status_code == 422 and missing.json()["error"]["param"] == "file"
    # A PDF inline as base64 works as well.
    body = with_(documents=[{"pdf_base64": base64.b64encode(pdf).decode()}])
    accepted = await post(gw, key, body)
    assert accepted.status_code == 202
    task = await gw.wait_for(accepted.json()["id"], key)
    assert task["status"] == "succeeded" and "4817" in task["result"]["answer"]


async def test_errors_never_echo_the_input(gw: Gateway) -> None:
    key = await gw.new_key()
    secret_text = "TOPSECRET-" + "z" * 50
    response = await post(gw, key, with_(documents=[{"text": secret_text, "bogus": 1}]))
    assert response.status_code == 422
    assert "TOPSECRET" not in response.text
