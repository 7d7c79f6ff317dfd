"""A real llama.cpp server (``xllamacpp``) on 127.0.0.1 serving the bundled GGUF, for tests.

It runs in a child process (``python -m support.llama_server``), so a test can stop it with a
real signal and its decoding threads never share the test's interpreter. The parent reads the
server's address from the child's first stdout line, then waits for ``/health``.

What a test can watch: ``/slots`` (which slots are decoding), ``/metrics`` (Prometheus counters:
tokens predicted, requests processing), ``/tokenize`` (the server's own token ids), ``/props``
(``total_slots`` and the per-slot ``n_ctx``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parents[2]


def bundled_gguf() -> Path:
    from engines.bundled_model import bundled_gguf_path

    return bundled_gguf_path()


@dataclass
class LlamaServer:
    """A running llama.cpp server and what a test can ask it."""

    url: str
    slots: int
    ctx_per_slot: int
    process: subprocess.Popen[str]
    log: list[str] = field(default_factory=list)

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.url}{path}", timeout=10)
        response.raise_for_status()
        return response.json()

    def props(self) -> dict[str, Any]:
        props: dict[str, Any] = self.get("/props")
        return props

    def slot_states(self) -> list[dict[str, Any]]:
        states: list[dict[str, Any]] = self.get("/slots")
        return states

    def busy_slots(self) -> int:
        return sum(1 for slot in self.slot_states() if slot.get("is_processing"))

    def metrics(self) -> dict[str, float]:
        """Prometheus samples by name, ``llamacpp:`` prefix dropped (``tokens_predicted_total``,
        ``requests_processing``, ``requests_deferred``, ...)."""
        response = httpx.get(f"{self.url}/metrics", timeout=10)
        response.raise_for_status()
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                samples[sample.name.removeprefix("llamacpp:")] = sample.value
        return samples

    def tokenize(self, text: str) -> list[int]:
        response = httpx.post(f"{self.url}/tokenize", json={"content": text}, timeout=10)
        response.raise_for_status()
        tokens: list[int] = response.json()["tokens"]
        return tokens

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        """Signal the server and wait for it; SIGKILL if it does not exit in time."""
        if self.alive():
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=timeout_s)

    def output(self) -> str:
        return "".join(self.log)


@contextmanager
def llama_server(
    *,
    slots: int = 2,
    ctx_per_slot: int = 2048,
    threads: int = 1,
    model: Path | None = None,
    alias: str = "smollm2-135m-instruct",
    startup_timeout_s: float = 60.0,
) -> Iterator[LlamaServer]:
    """Start a llama.cpp server with ``slots`` parallel slots of ``ctx_per_slot`` tokens each,
    wait until it is healthy, yield it, and stop it (SIGTERM, then SIGKILL)."""
    command = [
        sys.executable,
        "-m",
        "support.llama_server",
        "--model",
        str(model or bundled_gguf()),
        "--slots",
        str(slots),
        "--ctx-per-slot",
        str(ctx_per_slot),
        "--threads",
        str(threads),
        "--alias",
        alias,
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests")])
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = LlamaServer(url="", slots=slots, ctx_per_slot=ctx_per_slot, process=process)
    address: dict[str, str] = {}
    ready = threading.Event()

    def pump() -> None:  # the child's output, kept for failure messages; stdout never fills up
        assert process.stdout is not None
        for line in process.stdout:
            # llama.cpp's log thread writes to the same stdout, so the address line may come after
            # a log line's unfinished prefix (its timestamp): find it anywhere in the line.
            start = line.find('{"url"')
            if not address and start >= 0:
                address.update(json.JSONDecoder().raw_decode(line, start)[0])
                ready.set()
            server.log.append(line)
        ready.set()

    reader = threading.Thread(target=pump, daemon=True, name="llama-server-output")
    reader.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        if not ready.wait(startup_timeout_s) or not address:
            raise RuntimeError(f"llama.cpp server did not start:\n{server.output()[-4000:]}")
        server.url = address["url"]
        while not healthy(server.url):
            if not server.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"llama.cpp server never became healthy:\n{server.output()}")
            time.sleep(0.05)
        yield server
    finally:
        server.stop()
        reader.join(timeout=5)


def healthy(url: str) -> bool:
    """Whether the server at ``url`` answers ``/health`` with 200."""
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _serve(args: argparse.Namespace) -> int:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.model_alias = args.alias
    params.n_parallel = args.slots
    params.n_ctx = args.slots * args.ctx_per_slot  # llama.cpp splits n_ctx across the slots
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.endpoint_metrics = True
    params.endpoint_slots = True
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.warmup = False
    # Block the stop signals before the server's threads start, so they all inherit the mask and
    # only sigwait below receives them.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    server = xllamacpp.Server(params)
    sys.stdout.write(json.dumps({"url": server.listening_address}) + "\n")
    sys.stdout.flush()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    del server  # ~Server stops the HTTP threads and the decoding loop
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a llama.cpp server for tests (xllamacpp)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--ctx-per-slot", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--alias", default="smollm2-135m-instruct")
    return _serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
