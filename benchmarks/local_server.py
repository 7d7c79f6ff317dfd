"""MinionS over a long synthetic document with the local model behind a llama.cpp server (the
bundled GGUF, ``MGW_LOCAL_ENGINE=openai``) vs the in-process vLLM engine: wall time, jobs
dropped, local tokens per second, and the jobs' wait in the engine's client-side queue (the
Result's ``timings.local_queue_wait_s``).

    .venv/bin/python benchmarks/local_server.py [--pages 50] [--tasks 2] [--slots 2]
        [--threads 2] [--engines llama,vllm] [--write docs/benchmarks.md]

Only the local side is measured: the remote is a fixed planner (``--tasks`` tasks over all
chunks, then a final answer), so both engines run exactly the same jobs. One engine at a time;
run it under the heavy lock on a shared machine. The llama.cpp server is started with
``tests/support/llama_server.py`` (xllamacpp) unless ``--llama-url`` names a running one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from doc_sections import write_section

from engines.base import Engine, EngineSpec, GenerationRequest, GenerationResult
from engines.bundled_model import BUNDLED_MODEL
from engines.factory import create_engine
from engines.prices import PriceTable
from engines.usage import Usage
from protocols import MinionS
from protocols.synthetic import make_document
from protocols.task import Options, Task

logger = logging.getLogger("benchmarks.local_server")
REPO = Path(__file__).resolve().parents[1]
TASKS = (
    "Find the access code for the north warehouse.",
    "Who reviewed the maintenance backlog?",
    "List any dates mentioned.",
    "Is there any mention of energy use?",
)


class FixedPlanner(Engine):
    """The remote of this benchmark: the same plan every time, then a final answer."""

    kind = "fixed"

    def __init__(self, tasks: int) -> None:
        super().__init__(model="fixed-planner", context_window=1_000_000)
        self.plan = json.dumps({"tasks": [{"task": t, "chunks": "all"} for t in TASKS[:tasks]]})

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        final = json.dumps({"decision": "final_answer", "answer": "-", "scratchpad": ""})
        return [
            GenerationResult(
                text=self.plan if "Plan the work" in r.messages[-1].content else final,
                finish_reason="stop",
                usage=Usage(),
                model=self.model,
            )
            for r in requests
        ]

    async def score(self, prefix: str, continuations: Sequence[str]) -> list[float]:
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        return len(text) // 4


async def run_many(local: Engine, args: argparse.Namespace) -> dict[str, Any]:
    """``--runs`` runs, each over a document of its own seed (so no prompt cache serves one run
    from another); the row of the median wall time, with every run's wall time."""
    rows = []
    for run in range(args.runs):
        rows.append(await run_minions(local, args, args.seed + run))
        logger.info("run %d: %s", run + 1, rows[-1])
    ordered = sorted(rows, key=lambda row: float(row["wall_s"]))
    median = dict(ordered[len(ordered) // 2])
    median["runs_wall_s"] = [row["wall_s"] for row in rows]
    median["dropped_all_runs"] = sum(sum(row["dropped"].values()) for row in rows)
    return median


async def run_minions(local: Engine, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    document = make_document(pages=args.pages, seed=seed)
    task = Task(
        question=document.question,
        documents=(document.document,),
        options=Options(
            chunk_tokens=args.chunk_tokens, job_max_tokens=args.job_max_tokens, max_rounds=1
        ),
    )
    started = time.perf_counter()
    result = await MinionS(local, FixedPlanner(args.tasks), PriceTable.default()).run(task)
    wall = time.perf_counter() - started
    jobs = result.rounds[0].jobs
    assert jobs is not None
    usage = result.usage.local
    return {
        "wall_s": round(wall, 1),
        "jobs": jobs.run,
        "dropped": {k: v for k, v in jobs.dropped.items() if k != "no_answer"},
        "no_answer": jobs.dropped.get("no_answer", 0),
        "local_prompt_tokens": usage.prompt_tokens,
        "local_completion_tokens": usage.completion_tokens,
        "local_tokens_per_s": round((usage.prompt_tokens + usage.completion_tokens) / wall, 1),
        "completion_tokens_per_s": round(usage.completion_tokens / wall, 2),
        # Summed over the run's jobs, which wait side by side: it can exceed the wall time.
        "local_queue_wait_s": round(result.timings.local_queue_wait_s, 1),
    }


async def with_llama(args: argparse.Namespace) -> dict[str, Any]:
    with ExitStack() as stack:
        url = args.llama_url
        if url is None:
            sys.path.insert(0, str(REPO / "tests"))
            from support.llama_server import llama_server

            server = stack.enter_context(
                llama_server(slots=args.slots, ctx_per_slot=args.ctx_per_slot, threads=args.threads)
            )
            url = server.url + "/v1"
        spec = EngineSpec(
            kind="openai", model=BUNDLED_MODEL, base_url=url, options={"side": "local"}
        )
        local = create_engine(spec)
        try:
            row = await run_many(local, args)
        finally:
            await local.aclose()
        row["engine"] = f"llama.cpp server ({args.slots} slots, {args.threads} threads)"
        row["max_in_flight"] = local.describe()["queue"]["max_in_flight"]
        return row


async def with_vllm(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = Path(os.environ.get("MGW_DATA_DIR", REPO / ".mgw" / "test-data"))
    spec = EngineSpec(
        kind="vllm",
        model=BUNDLED_MODEL,
        options={"data_dir": data_dir, "max_model_len": args.ctx_per_slot},
    )
    local = create_engine(spec)
    try:
        row = await run_many(local, args)
    finally:
        await local.aclose()
    row["engine"] = "in-process vLLM"
    return row


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "## Local server vs in-process engine (`benchmarks/local_server.py`)",
        "",
        f"{report['date']}, {report['device']}; MinionS, one round, {report['pages']}-page "
        f"synthetic document, {report['chunk_tokens']}-token chunks, {report['tasks']} tasks "
        f"over all chunks (a fixed planner stands in for the remote), `job_max_tokens` "
        f"{report['job_max_tokens']}; the bundled model on both engines. Median of "
        f"{report['runs']} runs (each over a document of its own seed).",
        "",
        "| local engine | jobs | wall s (median; all runs) | jobs dropped, all runs "
        "(not no_answer) | local tokens/s | completion tokens/s | client-side queue wait s, "
        "summed over jobs |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        runs = ", ".join(str(wall) for wall in row["runs_wall_s"])
        lines.append(
            f"| {row['engine']} | {row['jobs']} | {row['wall_s']} ({runs}) | "
            f"{row['dropped_all_runs']} | {row['local_tokens_per_s']} | "
            f"{row['completion_tokens_per_s']} | {row['local_queue_wait_s']} |"
        )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "device": f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "pages": args.pages,
        "chunk_tokens": args.chunk_tokens,
        "tasks": args.tasks,
        "job_max_tokens": args.job_max_tokens,
        "runs": args.runs,
        "rows": [],
    }
    runners = {"llama": with_llama, "vllm": with_vllm}
    for name in args.engines:
        logger.info("running MinionS with the %s engine", name)
        report["rows"].append(await runners[name](args))
        logger.info("%s", report["rows"][-1])
    return report


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--tasks", type=int, default=2, choices=range(1, len(TASKS) + 1))
    parser.add_argument("--chunk-tokens", type=int, default=1000)
    parser.add_argument("--job-max-tokens", type=int, default=64)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx-per-slot", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--llama-url", help="a running llama.cpp server's /v1 URL")
    parser.add_argument(
        "--engines", type=lambda s: [e for e in s.split(",") if e], default=["llama", "vllm"]
    )
    parser.add_argument("--write", type=Path, help="upsert the results section in this file")
    return parser.parse_args()


if __name__ == "__main__":  # vLLM spawns worker processes: the guard is required
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    arguments = parse_args()
    result = asyncio.run(main(arguments))
    section = markdown(result)
    sys.stdout.write(json.dumps(result, indent=2) + "\n\n" + section + "\n")
    if arguments.write:
        write_section(arguments.write, "local_server", section)
        logger.info("wrote %s", arguments.write)
