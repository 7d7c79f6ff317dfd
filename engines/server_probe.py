"""What an OpenAI-compatible local server is and what it can do, asked once at start.

Each family tells its limits its own way; nothing here is assumed when the server can say it:

* llama.cpp: ``GET /props`` -> ``total_slots`` and the per-slot ``n_ctx``; ``POST /tokenize``;
  streams ``prompt_progress`` events when asked (``return_progress``).
* vLLM (``vllm serve``): ``GET /version``; ``/v1/models`` -> ``max_model_len``; ``POST /tokenize``;
  prompt log-probabilities through ``/v1/completions`` with ``echo`` and ``logprobs``.
* Ollama: ``GET /api/version``; ``POST /api/show`` -> the model's ``num_ctx`` parameter (else
  Ollama's default) and its trained ``context_length``; no tokenize endpoint.
* LM Studio: ``GET /api/v0/models`` -> ``loaded_context_length`` / ``max_context_length``.
* Anything else answering ``/v1/models``: a generic OpenAI-compatible server.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

logger = logging.getLogger(__name__)

Family = Literal["llama.cpp", "vllm", "ollama", "lmstudio", "openai-compatible"]
Structured = Literal["response_format", "none", "unknown"]

# Parallel requests a family serves when the server cannot say: vLLM batches many sequences;
# Ollama serves one at a time unless OLLAMA_NUM_PARALLEL is raised (its documented default is
# 1); LM Studio and unknown servers: one, the safe choice (raise MGW_LOCAL_MAX_CONCURRENCY).
DEFAULT_CONCURRENCY: dict[Family, int] = {
    "llama.cpp": 1,
    "vllm": 64,
    "ollama": 1,
    "lmstudio": 1,
    "openai-compatible": 1,
}
# Ollama's context window when the model sets no num_ctx (OLLAMA_CONTEXT_LENGTH's default).
OLLAMA_DEFAULT_NUM_CTX = 4096


@dataclass(frozen=True)
class ServerInfo:
    """What the probe found. ``None`` means the server did not say."""

    family: Family
    root_url: str
    models: tuple[str, ...] = ()
    version: str | None = None
    slots: int | None = None
    context_window: int | None = None
    tokenize: Literal["llama.cpp", "vllm"] | None = None
    structured: Structured = "unknown"
    prompt_logprobs: bool = False
    progress_events: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def concurrency(self) -> int:
        """Requests to keep in flight: the server's slots, else the family's default."""
        return self.slots or DEFAULT_CONCURRENCY[self.family]

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "version": self.version,
            "models": list(self.models),
            "slots": self.slots,
            "concurrency": self.concurrency,
            "context_window": self.context_window,
            "tokenize": self.tokenize,
            "structured_outputs": self.structured,
            "prompt_logprobs": self.prompt_logprobs,
            "notes": list(self.notes),
        }


class ServerUnreachableError(RuntimeError):
    """Nothing answered at the server's address."""


def root_url(base_url: str) -> str:
    """The server's root from an OpenAI base URL (``http://h:p/v1`` -> ``http://h:p``)."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def probe_server(
    base_url: str,
    *,
    model: str | None = None,
    api_key: str | None = None,
    timeout_s: float = 5.0,
    check_structured: bool = True,
) -> ServerInfo:
    """Ask the server at ``base_url`` what it is. Raises ``ServerUnreachableError`` when nothing
    answers; a server that answers but says little yields a generic ``ServerInfo``."""
    root = root_url(base_url)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=root, headers=headers, timeout=timeout_s) as client:
        models, model_cards = _models(client)
        asked = _Asked(client, root, model, models, model_cards)
        for detect in (_llama_cpp, _ollama, _lmstudio, _vllm):
            info = detect(asked)
            if info is not None:
                return info
        structured: Structured = "unknown"
        if check_structured and (model or models):
            structured = _try_response_format(client, model or models[0])
        return ServerInfo(
            family="openai-compatible",
            root_url=root,
            models=models,
            structured=structured,
            notes=("the server did not report its context window or parallel slots",),
        )


@dataclass(frozen=True)
class _Asked:
    """What every family's detector starts from: the server and its ``/v1/models``."""

    client: httpx.Client
    root: str
    model: str | None
    models: tuple[str, ...]
    cards: list[dict[str, Any]]


def _get(client: httpx.Client, path: str) -> Any | None:
    """The JSON at ``path``, or None for any non-2xx or non-JSON answer."""
    try:
        response = client.get(path)
    except httpx.TransportError:
        return None
    if not response.is_success:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _models(client: httpx.Client) -> tuple[tuple[str, ...], list[dict[str, Any]]]:
    try:
        response = client.get("/v1/models")
    except httpx.TransportError as exc:
        raise ServerUnreachableError(f"cannot reach {client.base_url}: {exc}") from exc
    cards: list[dict[str, Any]] = []
    if response.is_success:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if isinstance(body, dict) and isinstance(body.get("data"), list):
            cards = [card for card in body["data"] if isinstance(card, dict)]
    return tuple(str(card.get("id")) for card in cards if card.get("id")), cards


def _llama_cpp(asked: _Asked) -> ServerInfo | None:
    props = _get(asked.client, "/props")
    if not isinstance(props, dict) or "total_slots" not in props:
        return None
    settings = props.get("default_generation_settings") or {}
    n_ctx = settings.get("n_ctx") or props.get("n_ctx")
    slots = int(props["total_slots"]) or None
    notes = []
    if n_ctx is None:
        slot_states = _get(asked.client, "/slots")
        if isinstance(slot_states, list) and slot_states:
            n_ctx = slot_states[0].get("n_ctx")
    if n_ctx is None:
        notes.append("llama.cpp did not report n_ctx (neither /props nor /slots)")
    return ServerInfo(
        family="llama.cpp",
        root_url=asked.root,
        models=asked.models,
        version=str(props.get("build_info") or "") or None,
        slots=slots,
        context_window=int(n_ctx) if n_ctx else None,
        tokenize="llama.cpp",
        structured="response_format",
        # llama.cpp's /v1/completions ignores `echo`: no log-probabilities of the prompt.
        prompt_logprobs=False,
        progress_events=True,
        notes=tuple(notes),
    )


def _ollama(asked: _Asked) -> ServerInfo | None:
    version = _get(asked.client, "/api/version")
    if not isinstance(version, dict) or "version" not in version:
        return None
    name = asked.model or (asked.models[0] if asked.models else None)
    context: int | None = None
    notes: list[str] = []
    if name:
        try:
            response = asked.client.post("/api/show", json={"model": name})
            show = response.json() if response.is_success else {}
        except (httpx.TransportError, ValueError):
            show = {}
        trained = next(
            (
                int(v)
                for k, v in (show.get("model_info") or {}).items()
                if k.endswith(".context_length")
            ),
            None,
        )
        num_ctx = _ollama_num_ctx(str(show.get("parameters") or ""))
        if num_ctx is None:
            num_ctx = OLLAMA_DEFAULT_NUM_CTX
            notes.append(
                f"Ollama serves {name!r} with its default context of {OLLAMA_DEFAULT_NUM_CTX} "
                "tokens unless OLLAMA_CONTEXT_LENGTH or the model's num_ctx says otherwise"
            )
        context = min(num_ctx, trained) if trained else num_ctx
    notes.append(
        "Ollama has no tokenize endpoint: name a tokenizer (MGW_LOCAL_TOKENIZER) for exact counts"
    )
    return ServerInfo(
        family="ollama",
        root_url=asked.root,
        models=asked.models,
        version=str(version["version"]),
        context_window=context,
        structured="response_format",
        notes=tuple(notes),
    )


def _ollama_num_ctx(parameters: str) -> int | None:
    for line in parameters.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "num_ctx" and parts[1].isdigit():
            return int(parts[1])
    return None


def _lmstudio(asked: _Asked) -> ServerInfo | None:
    listing = _get(asked.client, "/api/v0/models")
    if not isinstance(listing, dict) or not isinstance(listing.get("data"), list):
        return None
    entries = [entry for entry in listing["data"] if isinstance(entry, dict)]
    chosen = next((e for e in entries if e.get("id") == asked.model), None) or next(
        (e for e in entries if e.get("state") == "loaded"), None
    )
    context = None
    if chosen is not None:
        context = chosen.get("loaded_context_length") or chosen.get("max_context_length")
    return ServerInfo(
        family="lmstudio",
        root_url=asked.root,
        models=asked.models,
        context_window=int(context) if context else None,
        structured="response_format",
        notes=("LM Studio has no tokenize endpoint: name a tokenizer (MGW_LOCAL_TOKENIZER)",),
    )


def _vllm(asked: _Asked) -> ServerInfo | None:
    first = asked.cards[0] if asked.cards else None
    card = next((c for c in asked.cards if c.get("id") == asked.model), first)
    version = _get(asked.client, "/version")
    owned_by_vllm = card is not None and card.get("owned_by") == "vllm"
    if not owned_by_vllm and not (isinstance(version, dict) and "version" in version):
        return None
    max_len = card.get("max_model_len") if card else None
    return ServerInfo(
        family="vllm",
        root_url=asked.root,
        models=asked.models,
        version=str(version["version"]) if isinstance(version, dict) else None,
        context_window=int(max_len) if max_len else None,
        tokenize="vllm",
        structured="response_format",
        prompt_logprobs=True,
    )


def _try_response_format(client: httpx.Client, model: str) -> Structured:
    """One 1-token request with a JSON schema: does the server accept ``response_format``?"""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Reply with an empty JSON object."}],
        "max_tokens": 1,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "probe", "schema": {"type": "object"}},
        },
    }
    try:
        response = client.post("/v1/chat/completions", json=body)
    except httpx.TransportError:
        return "unknown"
    if response.is_success:
        return "response_format"
    if 400 <= response.status_code < 500:
        return "none"
    return "unknown"
