"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests, fronting any ``Engine``, with
scripted faults (429, 500, hangs, malformed JSON) to exercise the client's retry and errors, and
lies a provider or proxy can tell: another model name in the reply, inflated usage."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from engines.base import ChatMessage, Engine, GenerationRequest

Fault = str  # "429", "500", "401", "404", "400", "hang", "malformed", "ok"


class FaultPlan:
    def __init__(self) -> None:
        self.queue: deque[Fault] = deque()
        self.requests = 0

    def push(self, *faults: Fault) -> None:
        self.queue.extend(faults)

    def next(self) -> Fault:
        self.requests += 1
        return self.queue.popleft() if self.queue else "ok"


def build_app(
    engine: Engine,
    faults: FaultPlan,
    *,
    reply_model: str | None = None,
    reported_prompt_tokens: int | None = None,
) -> FastAPI:
    """``reply_model``: the model name every reply claims (default: the one asked for);
    ``reported_prompt_tokens``: the prompt tokens every reply reports (default: the truth)."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        fault = faults.next()
        if fault == "hang":
            await asyncio.sleep(3)
        if fault in {"429", "500", "401", "404", "400"}:
            return JSONResponse(
                {"error": {"message": f"injected {fault}", "type": "test"}}, status_code=int(fault)
            )
        if fault == "malformed":
            return PlainTextResponse("{not json", media_type="application/json")
        body: dict[str, Any] = await request.json()
        schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema")
        gen = GenerationRequest(
            messages=tuple(ChatMessage(**m) for m in body["messages"]),
            max_tokens=body.get("max_tokens") or 64,
            temperature=body.get("temperature", 0.0),
            json_schema=schema,
        )
        result = await engine.generate_one(gen)
        prompt_tokens = reported_prompt_tokens or result.usage.prompt_tokens
        return JSONResponse(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": reply_model or body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": result.text},
                        "finish_reason": result.finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": result.usage.completion_tokens,
                    "total_tokens": prompt_tokens + result.usage.completion_tokens,
                },
            }
        )

    return app


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free 127.0.0.1 port in a thread; yield its base URL."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="error",
        lifespan="on",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
