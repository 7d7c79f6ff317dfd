"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests, fronting any ``Engine``, with
scripted faults to exercise the client's retries, timeouts and errors, and lies a provider or
proxy can tell: another model name in the reply, inflated usage.

Faults, one per request in the order pushed (then "ok"):
  "429", "500", "401", "404", "400"   an error answer
  "429:<s>"                           429 with ``Retry-After: <s>``
  "hang"                              wait 3 s before answering
  "malformed"                         a body that is not JSON
  "stall"                             (streaming) two content events, then silence for 30 s
  "drop"                              (streaming) two content events, then the connection is cut
  "slow:<s>"                          (streaming) every content event <s> seconds after the last
With ``reject_schemas`` set, a request with ``response_format`` is answered 400.
Streaming (``"stream": true``) answers as server-sent events, word by word, with a usage event
when ``stream_options.include_usage`` asks for one. ``FaultPlan`` counts requests and the most
that were in flight at once, and keeps each chat request's body.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from engines.base import ChatMessage, Engine, GenerationRequest, GenerationResult

Fault = str


class InjectedDrop(Exception):
    """Raised inside a streaming body: uvicorn cuts the connection mid-response."""


class FaultPlan:
    def __init__(self) -> None:
        self.queue: deque[Fault] = deque()
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.disconnects = 0  # streams whose client went away before the end
        self.reject_schemas = False  # answer 400 to response_format, like a server without it
        self.bodies: list[dict[str, Any]] = []  # every chat request's JSON body, as received

    def push(self, *faults: Fault) -> None:
        self.queue.extend(faults)

    def next(self) -> Fault:
        self.requests += 1
        return self.queue.popleft() if self.queue else "ok"

    def reset(self) -> None:
        self.queue.clear()
        self.requests = self.in_flight = self.max_in_flight = self.disconnects = 0
        self.bodies.clear()


def build_app(
    engine: Engine,
    faults: FaultPlan,
    *,
    reply_model: str | None = None,
    reported_prompt_tokens: int | None = None,
    like_vllm: bool = False,
) -> FastAPI:
    """``reply_model``: the model name every reply claims (default: the one asked for);
    ``reported_prompt_tokens``: the prompt tokens every reply reports (default: the truth);
    ``like_vllm``: also answer as ``vllm serve`` does (``/version``, ``/v1/models`` with
    ``max_model_len``, ``/tokenize``, and ``/v1/completions`` with ``echo`` and ``logprobs``)."""
    app = FastAPI()
    lies = _Lies(reply_model, reported_prompt_tokens)
    if like_vllm:
        _add_vllm_routes(app, engine)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        fault = faults.next()
        if fault == "hang":
            await asyncio.sleep(3)
        code, _, after = fault.partition(":")
        if code in {"429", "500", "401", "404", "400"}:
            headers = {"Retry-After": after} if after else None
            return JSONResponse(
                {"error": {"message": f"injected {code}", "type": "test"}},
                status_code=int(code),
                headers=headers,
            )
        if fault == "malformed":
            return PlainTextResponse("{not json", media_type="application/json")
        body: dict[str, Any] = await request.json()
        faults.bodies.append(body)
        if faults.reject_schemas and "response_format" in body:
            return JSONResponse(
                {"error": {"message": "response_format is not supported", "type": "test"}},
                status_code=400,
            )
        schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema")
        gen = GenerationRequest(
            messages=tuple(ChatMessage(**m) for m in body["messages"]),
            max_tokens=body.get("max_tokens") or 64,
            temperature=body.get("temperature", 0.0),
            json_schema=schema,
        )
        if not body.get("stream"):
            faults.in_flight += 1
            faults.max_in_flight = max(faults.max_in_flight, faults.in_flight)
            try:
                result = await engine.generate_one(gen)
            finally:
                faults.in_flight -= 1
            return JSONResponse(_completion(lies.model(body["model"]), result, lies))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(
            _events(
                request, engine, gen, lies.model(body["model"]), fault, include_usage, faults, lies
            ),
            media_type="text/event-stream",
        )

    return app


def _add_vllm_routes(app: FastAPI, engine: Engine) -> None:
    """Whitespace words as tokens; a prompt token's log-probability is -0.1 when the same word
    came earlier in the prompt, else -5.0 (the scripted engine's ``score`` rule)."""
    vocabulary: dict[str, int] = {}
    words: dict[int, str] = {}

    def ids(text: str) -> list[int]:
        found = []
        for word in text.split():
            if word not in vocabulary:
                vocabulary[word] = len(vocabulary)
                words[vocabulary[word]] = word
            found.append(vocabulary[word])
        return found

    @app.get("/version")
    async def version() -> dict[str, str]:
        return {"version": "0.0.0-test"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": "test-model", "owned_by": "vllm", "max_model_len": engine.context_window}
        return {"object": "list", "data": [card]}

    @app.post("/tokenize")
    async def tokenize(request: Request) -> dict[str, Any]:
        body = await request.json()
        tokens = ids(body["prompt"])
        return {"count": len(tokens), "tokens": tokens, "max_model_len": engine.context_window}

    @app.post("/v1/completions")
    async def completions(request: Request) -> dict[str, Any]:
        body = await request.json()
        prompt: list[int] = body["prompt"]
        logprobs: list[float | None] = [None] + [
            -0.1 if token in prompt[:position] else -5.0
            for position, token in enumerate(prompt)
            if position
        ]
        return {
            "id": "cmpl-test",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "text": " ".join(words[t] for t in prompt) + " x",
                    "finish_reason": "length",
                    "logprobs": {
                        "tokens": [words[t] for t in prompt] + ["x"],
                        "token_logprobs": [*logprobs, -1.0],
                        "top_logprobs": None,
                        "text_offset": [],
                    },
                }
            ],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": 1,
                      "total_tokens": len(prompt) + 1},
        }  # fmt: skip


class _Lies:
    def __init__(self, reply_model: str | None, prompt_tokens: int | None) -> None:
        self.reply_model = reply_model
        self.prompt_tokens = prompt_tokens

    def model(self, asked: str) -> str:
        return self.reply_model or asked


def _usage(result: GenerationResult, lies: _Lies) -> dict[str, int]:
    prompt = lies.prompt_tokens or result.usage.prompt_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": result.usage.completion_tokens,
        "total_tokens": prompt + result.usage.completion_tokens,
    }


def _completion(model: str, result: GenerationResult, lies: _Lies) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "finish_reason": result.finish_reason,
            }
        ],
        "usage": _usage(result, lies),
    }


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> str:
    event = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(event)}\n\n"


async def _events(
    request: Request,
    engine: Engine,
    gen: GenerationRequest,
    model: str,
    fault: Fault,
    include_usage: bool,
    faults: FaultPlan,
    lies: _Lies,
) -> AsyncIterator[str]:
    faults.in_flight += 1
    faults.max_in_flight = max(faults.max_in_flight, faults.in_flight)
    finished = False
    try:
        result = await engine.generate_one(gen)
        yield _chunk(model, {"role": "assistant", "content": ""})
        words = result.text.split(" ")
        pause = float(fault.partition(":")[2]) if fault.startswith("slow:") else 0.0
        for index, word in enumerate(words):
            if index == 2 and fault == "stall":
                # Silent for up to 30 s, watching for the client to go (as llama.cpp does).
                for _ in range(300):
                    if await request.is_disconnected():
                        return
                    await asyncio.sleep(0.1)
            if index == 2 and fault == "drop":
                raise InjectedDrop("connection cut by the test server")
            if pause:
                await asyncio.sleep(pause)
            yield _chunk(model, {"content": word if index == 0 else " " + word})
        yield _chunk(model, {}, result.finish_reason)
        if include_usage:
            event = {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [],
                "usage": _usage(result, lies),
            }
            yield f"data: {json.dumps(event)}\n\n"
        yield "data: [DONE]\n\n"
        finished = True
    finally:
        faults.in_flight -= 1
        if not finished and fault != "drop":
            faults.disconnects += 1


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free 127.0.0.1 port in a thread; yield its base URL."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="critical",
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
