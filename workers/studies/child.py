"""The process one study runs in: ``python -m workers.studies.child``.

Started by ``workers.studies.runner`` at the lowest CPU priority (``os.nice(19)``) with torch
held to a few threads, so the worker's language-model work keeps the CPU. Protocol:

* stdin, first line: the spec as JSON (``study``, ``module``, ``params``, ``out_dir``,
  ``threads``). The module path was resolved by the parent from its own study registry.
* stdout: JSON lines, ``{"progress": {"done", "total", "message"}}`` any number of times, then
  ``{"result": <StudyResult>}`` (exit 0) or ``{"error": "<type>: <message>"}`` (exit 1). Anything
  else the study prints goes to stderr (stdout is re-pointed there), so it cannot corrupt this.
* After the spec the parent keeps stdin open and never writes again: end of file on stdin
  means the parent died (even by SIGKILL), and the child exits at once instead of running on
  as an orphan.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger("workers.studies.child")

ORPHANED_EXIT_CODE = 3


def _lower_priority(threads: int) -> None:
    try:
        os.nice(19)
    except OSError:  # already as low as it gets, or not permitted: run anyway
        logger.warning("could not lower the study's CPU priority", exc_info=True)
    # Before torch is imported: its OpenMP/MKL pools read these when they start.
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)


def _watch_parent(stdin: IO[bytes]) -> None:
    def watch() -> None:
        stdin.read()  # returns at end of file: the parent is gone
        os._exit(ORPHANED_EXIT_CODE)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _run(spec: dict[str, Any], send: Any) -> dict[str, Any]:
    import torch

    from analysis.studies.base import StudyModule, run_study

    threads = int(spec["threads"])
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only settable once, before any inter-op work
        torch.set_num_interop_threads(threads)
    module: StudyModule = importlib.import_module(str(spec["module"]))
    params = module.Params.model_validate(spec["params"])

    def progress(done: int, total: int, message: str = "") -> None:
        send({"progress": {"done": done, "total": total, "message": str(message)[:200]}})

    result = run_study(
        str(spec["study"]),
        params,
        Path(spec["out_dir"]),
        progress,
        module_loader=lambda _name: module,
    )
    return result.model_dump(mode="json")


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s study %(name)s: %(message)s"
    )
    # The protocol gets its own copy of stdout; fd 1 (print, C libraries) goes to stderr.
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    lock = threading.Lock()

    def send(message: dict[str, Any]) -> None:
        with lock:
            protocol.write(json.dumps(message) + "\n")
            protocol.flush()

    spec: dict[str, Any] = json.loads(sys.stdin.buffer.readline())
    _lower_priority(int(spec["threads"]))
    _watch_parent(sys.stdin.buffer)
    try:
        result = _run(spec, send)
    except Exception as exc:
        logger.exception("study %s failed", spec.get("study"))
        send({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    send({"result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
