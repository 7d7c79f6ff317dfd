"""Family detection against small HTTP servers on 127.0.0.1 that answer as Ollama and LM Studio
do (their documented endpoints); llama.cpp and vLLM are covered by their own tests."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from support.openai_server import serve_in_thread

from engines.server_probe import OLLAMA_DEFAULT_NUM_CTX, probe_server


def ollama_app(parameters: str) -> FastAPI:
    app = FastAPI()

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
