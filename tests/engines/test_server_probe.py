"""Family detection against small HTTP servers on 127.0.0.1 that answer as Ollama and LM Studio
do (their documented endpoints), and the chat request the engine then sends them; llama.cpp and
vLLM are covered by their own tests."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI
from support.openai_server import FaultPlan, build_app, serve_in_thread
from support.scripted_engine import ScriptedEngine

from engines.base import GenerationRequest
from engines.local_server_engine import LocalServerEngine
from engines.server_probe import OLLAMA_DEFAULT_NUM_CTX, probe_server

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
}
LOADED = {"id": "llama-3.2-1b-instruct", "state": "loaded", "loaded_context_length": 4096}


def ollama_app(parameters: str, app: FastAPI | None = None) -> FastAPI:
    """Ollama's own endpoints, on ``app`` when given (a chat server) or on a new one."""
    app = app or FastAPI()

    @app.get("/api/version")
    async def version() -> dict[str, str]:
        return {"version": "0.12.0"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "qwen2.5:0.5b", "owned_by": "library"}]}

    @app.post("/api/show")
    async def show() -> dict[str, Any]:
        return {"parameters": parameters, "model_info": {"qwen2.context_length": 32768}}

    return app


def test_ollama_reports_its_num_ctx_and_one_slot() -> None:
    with serve_in_thread(ollama_app("num_ctx 8192\nstop <|im_end|>")) as url:
        info = probe_server(url + "/v1", model="qwen2.5:0.5b")
    assert (info.family, info.version, info.context_window) == ("ollama", "0.12.0", 8192)
    assert info.concurrency == 1 and info.slots is None
    assert info.tokenize is None and info.structured == "response_format"
    assert any("MGW_LOCAL_TOKENIZER" in note for note in info.notes)


def test_ollama_without_num_ctx_gets_its_default_window_and_says_so() -> None:
    with serve_in_thread(ollama_app("stop <|im_end|>")) as url:
        info = probe_server(url + "/v1", model="qwen2.5:0.5b")
    assert info.context_window == OLLAMA_DEFAULT_NUM_CTX
    assert any("OLLAMA_CONTEXT_LENGTH" in note for note in info.notes)


def lm_studio_app(app: FastAPI) -> FastAPI:
    @app.get("/api/v0/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [LOADED]}

    return app


@pytest.mark.parametrize(
    ("family", "model", "add_routes"),
    [
        ("ollama", "qwen2.5:0.5b", lambda app: ollama_app("num_ctx 8192", app)),
        ("lmstudio", LOADED["id"], lm_studio_app),
    ],
)
async def test_the_chat_request_carries_the_schema_as_the_server_documents_it(
    family: str, model: str, add_routes: Any
) -> None:
    # Ollama's OpenAI route reads response_format.json_schema.schema into its native `format`
    # (openai/openai.go, FromChatRequest) and defaults temperature to 1.0 when it is not sent;
    # LM Studio takes the same response_format. What goes on the wire is what is checked here.
    faults = FaultPlan()
    backend = ScriptedEngine(default=json.dumps({"answer": "Ottawa"}))
    with serve_in_thread(add_routes(build_app(backend, faults))) as url:
        engine = LocalServerEngine(model, base_url=url + "/v1", max_retries=0)
        assert engine.info is not None and engine.info.family == family
        request = GenerationRequest.from_prompt(
            "What is the capital of Canada?", json_schema=SCHEMA, max_tokens=32, stop=("END",)
        )
        result = await engine.generate_one(request)
        await engine.aclose()
    assert json.loads(result.text) == {"answer": "Ottawa"}
    (body,) = faults.bodies
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": SCHEMA, "strict": False},
    }
    assert body["model"] == model and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.0, 1.0, 32)
    assert body["stop"] == ["END"]
    assert "return_progress" not in body  # llama.cpp's alone


def test_lm_studio_reports_the_loaded_context_length() -> None:
    app = FastAPI()

    @app.get("/api/v0/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": "other", "state": "not-loaded", "max_context_length": 131072},
                {
                    "id": "llama-3.2-1b-instruct",
                    "state": "loaded",
                    "max_context_length": 131072,
                    "loaded_context_length": 4096,
                },
            ],
        }

    with serve_in_thread(app) as url:
        info = probe_server(url + "/v1", model="llama-3.2-1b-instruct")
    assert (info.family, info.context_window, info.concurrency) == ("lmstudio", 4096, 1)
