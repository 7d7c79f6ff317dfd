"""``minions-gw doctor``: ask the configured local and remote servers what they are, measure a
1-token answer, and say what is wrong with a fix for each problem.

Nothing here loads a model: the in-process vLLM engine is described from the settings only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from engines.server_probe import ServerInfo, ServerUnreachableError, probe_server
from engines.token_counting import tokenizer_counter
from service.settings import Settings

Side = Literal["local", "remote"]


@dataclass
class ServerReport:
    """What was found about one side, and what to fix."""

    side: Side
    engine: str
    url: str | None
    model: str
    info: ServerInfo | None = None
    tokenizer: str = "-"
    concurrency: int | None = None
    context_window: int | None = None
    latency_s: float | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "engine": self.engine,
            "url": self.url,
            "model": self.model,
            "server": self.info.describe() if self.info else None,
            "tokenizer": self.tokenizer,
            "concurrency": self.concurrency,
            "context_window": self.context_window,
            "latency_1_token_s": self.latency_s,
            "problems": self.problems,
            "notes": self.notes,
        }


def diagnose(settings: Settings, *, timeout_s: float = 30.0) -> list[ServerReport]:
    reports = [_local(settings, timeout_s)]
    remote = _remote(settings, timeout_s)
    if remote is not None:
        reports.append(remote)
    return reports


def _local(settings: Settings, timeout_s: float) -> ServerReport:
    if settings.local_engine != "openai":
        return ServerReport(
            side="local",
            engine="vllm (in-process)",
            url=None,
            model=settings.local_model,
            tokenizer="the model's own",
            concurrency=settings.local_max_num_seqs,
            context_window=settings.local_max_model_len,
        )
    report = ServerReport(
        side="local", engine="openai", url=settings.local_base_url, model=settings.local_model
    )
    if not settings.local_base_url:
        report.problems.append(
            "MGW_LOCAL_ENGINE=openai but MGW_LOCAL_BASE_URL is not set: set it to the server's "
            "OpenAI base URL (llama.cpp: http://127.0.0.1:8080/v1, Ollama: "
            "http://127.0.0.1:11434/v1, LM Studio: http://127.0.0.1:1234/v1)"
        )
        return report
    api_key = _secret(settings.local_api_key)
    info = _probe(report, settings.local_base_url, settings.local_model, api_key)
    if info is None:
        return report
    report.concurrency = settings.local_max_concurrency or info.concurrency
    if (
        settings.local_max_concurrency
        and info.slots
        and settings.local_max_concurrency > info.slots
    ):
        report.problems.append(
            f"MGW_LOCAL_MAX_CONCURRENCY={settings.local_max_concurrency} is more than the "
            f"server's {info.slots} slots: the rest wait inside the server, where their wait "
            f"counts against the stall timeout; set it to {info.slots} (or start the server "
            "with more slots, llama.cpp --parallel N)"
        )
    if info.slots is None and settings.local_max_concurrency is None:
        report.problems.append(
            f"the server does not report its parallel slots; {info.concurrency} request(s) at "
            f"a time is assumed for {info.family}: set MGW_LOCAL_MAX_CONCURRENCY to what it "
            "serves in parallel (Ollama: OLLAMA_NUM_PARALLEL)"
        )
    report.context_window = _window(report, settings, info)
    report.tokenizer = _tokenizer(report, settings, info)
    if info.structured == "none":
        report.problems.append(
            "the server rejects JSON-schema outputs (response_format): job outputs will be asked "
            "for in the prompt only, so more replies are unparseable; use a server that supports "
            "them (llama.cpp, vLLM, Ollama >= 0.5, LM Studio)"
        )
    if info.models and settings.local_model not in info.models and info.family != "llama.cpp":
        report.problems.append(
            f"the server does not list the model {settings.local_model!r} (it lists "
            f"{', '.join(info.models[:5])}): set MGW_LOCAL_MODEL to one of them"
        )
    report.latency_s = _one_token(report, settings.local_base_url, settings.local_model, api_key)
    return report


def _remote(settings: Settings, timeout_s: float) -> ServerReport | None:
    spec = settings.remote_engine_spec()
    if spec is None:
        return ServerReport(
            side="remote",
            engine="stand-in",
            url=None,
            model=settings.local_model,
            notes=[
                "no remote model is configured, so the local model stands in for it (set "
                "MGW_REMOTE_BASE_URL and MGW_REMOTE_MODEL, or OPENAI_API_KEY, for a real one)"
            ],
        )
    base_url = spec.base_url or "https://api.openai.com/v1"
    report = ServerReport(side="remote", engine="openai", url=base_url, model=spec.model)
    report.concurrency = settings.remote_max_concurrency
    report.latency_s = _one_token(report, base_url, spec.model, spec.api_key, timeout_s)
    return report


def _probe(
    report: ServerReport, base_url: str, model: str, api_key: str | None
) -> ServerInfo | None:
    try:
        report.info = probe_server(base_url, model=model, api_key=api_key)
    except ServerUnreachableError as exc:
        report.problems.append(
            f"cannot reach the local server ({exc}): start it, or fix MGW_LOCAL_BASE_URL"
        )
    return report.info


def _window(report: ServerReport, settings: Settings, info: ServerInfo) -> int | None:
    configured = (
        settings.local_max_model_len if "local_max_model_len" in settings.model_fields_set else None
    )
    if info.context_window is None:
        report.problems.append(
            "the server does not report its context window: set MGW_LOCAL_MAX_MODEL_LEN to the "
            "tokens one request may use"
            + (f" (now {configured})" if configured else " (4096 is assumed)")
        )
        return configured or 4096
    if configured is not None and configured > info.context_window:
        report.problems.append(
            f"MGW_LOCAL_MAX_MODEL_LEN={configured} is more than the server's context window "
            f"({info.context_window} tokens per request); the server's is used: lower the "
            "setting or give the server a longer context (llama.cpp: -c is shared by --parallel "
            "slots)"
        )
    return min(filter(None, (configured, info.context_window)))


def _tokenizer(report: ServerReport, settings: Settings, info: ServerInfo) -> str:
    if info.tokenize is not None:
        return f"server (/tokenize, {info.tokenize})"
    if settings.local_tokenizer:
        try:
            tokenizer_counter(settings.local_tokenizer)
        except ValueError as exc:
            report.problems.append(f"{exc}")
            return f"{settings.local_tokenizer} (cannot load)"
        return settings.local_tokenizer
    report.problems.append(
        "token counts will be estimated (the server has no tokenize endpoint): set "
        "MGW_LOCAL_TOKENIZER to the model's Hugging Face tokenizer (a local path or a cached id)"
    )
    return "estimate (3 characters a token)"


def _one_token(
    report: ServerReport,
    base_url: str,
    model: str,
    api_key: str | None,
    timeout_s: float = 30.0,
) -> float | None:
    """Seconds for a 1-token chat completion, or None (and a problem) when it fails."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    started = time.perf_counter()
    try:
        response = httpx.post(
            f"{base_url.rstrip('/')}/chat/completions",
            json=body,
            headers=headers,
            timeout=timeout_s,
        )
    except httpx.HTTPError as exc:
        report.problems.append(f"a 1-token request to {base_url} failed: {exc}")
        return None
    elapsed = time.perf_counter() - started
    if not response.is_success:
        fix = {
            401: "check the API key",
            404: "check the model name and the base URL (it usually ends in /v1)",
        }.get(response.status_code, "see the server's log")
        report.problems.append(
            f"a 1-token request to {base_url} answered {response.status_code}: {fix}"
        )
        return None
    return elapsed


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None
