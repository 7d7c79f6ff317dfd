"""Counting tokens the way the local server will: its own tokenizer first, then one the operator
names, and only then an estimate that errs on the long side.

Counts decide whether a chunk fits the local context window, so an undercount is the costly
mistake (the server truncates or rejects the prompt); the estimate therefore assumes short tokens.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Literal

import httpx

logger = logging.getLogger(__name__)

TokenCounter = Callable[[str], int]
CountSource = Literal["server", "tokenizer", "estimate"]

# About four characters a token for English under common BPE vocabularies; the safe estimate
# assumes three, so text counted as fitting does fit for vocabularies a third less efficient.
SAFE_CHARS_PER_TOKEN = 3


def estimate_tokens(text: str) -> int:
    """A quick estimate (four characters a token). Billing never uses it."""
    return math.ceil(len(text) / 4)


def safe_estimate_tokens(text: str) -> int:
    """An estimate that overcounts rather than undercounts (three characters a token)."""
    return math.ceil(len(text) / SAFE_CHARS_PER_TOKEN)


class ServerTokenCounter:
    """Token counts from the server's ``/tokenize`` (llama.cpp or vLLM), cached per text.

    Synchronous, because ``Engine.count_tokens`` is: chunking calls it from a worker thread, and
    the few calls made on the event loop cost a loopback round trip each.
    """

    def __init__(
        self,
        root_url: str,
        dialect: Literal["llama.cpp", "vllm"],
        *,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        cache_size: int = 65_536,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=root_url, headers=headers, timeout=timeout_s)
        self._lock = threading.Lock()  # httpx.Client is not documented thread-safe
        self._dialect = dialect
        self._model = model
        self.count: TokenCounter = lru_cache(maxsize=cache_size)(self._count)

    def _count(self, text: str) -> int:
        return len(self.ids(text)) if text else 0

    def ids(self, text: str) -> list[int]:
        """``text``'s token ids in the server's vocabulary, without special tokens."""
        if self._dialect == "llama.cpp":
            body: dict[str, object] = {"content": text, "add_special": False}
        else:
            body = {"model": self._model, "prompt": text, "add_special_tokens": False}
        with self._lock:
            response = self._client.post("/tokenize", json=body)
        response.raise_for_status()
        tokens: list[int] = [int(token) for token in response.json()["tokens"]]
        return tokens

    def close(self) -> None:
        self._client.close()


def tokenizer_counter(name_or_path: str) -> TokenCounter:
    """Token counts from a Hugging Face tokenizer the operator named (a local path, or a hub id
    already in the local cache: nothing is downloaded at run time)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
    except OSError as exc:
        raise ValueError(
            f"local_tokenizer: cannot load the tokenizer {name_or_path!r} from disk ({exc}); "
            "give a local path or a hub id already in the Hugging Face cache"
        ) from None

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    return lru_cache(maxsize=65_536)(count)
