"""MinionS fan-out: one round of 64 local jobs as one batch (our engine layer) vs one request at a
time (what the reference implementation does with its Ollama client), with the prefill/decode
split; then the remote tokens of minions, minion and remote_only on one 50-page document.

    .venv/bin/python benchmarks/minions_fanout.py [--jobs 64] [--chunk-tokens 1000,250]
        [--job-max-tokens 64] [--pages 50] [--skip-protocols] [--write docs/benchmarks.md]

The jobs are built by the protocol's own code (``protocols.jobs.build_jobs``), so the prompts are
exactly what MinionS sends. Prefill time is measured by running the same jobs with one new token;
decode time is the rest. Every timed run gets a fresh prompt prefix, so vLLM's prefix cache never
serves one run from another. Within a run, the 4 tasks over one chunk share that chunk's prefix
(the task follows the chunk in the prompt), and the cache serves it in both modes, as it would in
a real round; ``cached_prompt_tokens`` shows how much.

Engines come from the environment like the CLI (``MGW_*``); without a remote configured the local
model stands in for the remote, and the report says so. Where remote_only does not fit the
remote's context it is not run: its prompt is counted instead, and the report says so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doc_sections import write_section

from engines.base import Engine, GenerationRequest, GenerationResult
from engines.usage import Usage
from protocols import RemoteOnly, Task, build_protocol
from protocols.base import CHAT_TEMPLATE_MARGIN
from protocols.chunking import Chunk, chunk_documents
from protocols.jobs import build_jobs
from protocols.plans import JobPlan, PlannedTask
from protocols.synthetic import make_document
from protocols.task import Options
from service.engines import EngineSet, build_engine_set
from service.settings import Settings

logger = logging.getLogger("benchmarks.minions_fanout")

TASKS = (
    "Find the access code for the north warehouse.",
    "List any dates mentioned.",
    "Who reviewed the maintenance backlog?",
    "Is there any mention of energy use?",
)


@dataclass
class Timed:
    seconds: float
    usage: Usage


def job_requests(
    local: Engine, chunks: list[Chunk], jobs: int, job_max_tokens: int, run_tag: str
) -> list[GenerationRequest]:
    """``jobs`` MinionS job requests (tasks x chunks), prefixed so no two runs share a cache."""
    chunks_per_task = -(-jobs // len(TASKS))
    plan = JobPlan(
        tasks=[PlannedTask(task=task, chunks=list(range(chunks_per_task))) for task in TASKS]
    )
    options = Options(job_max_tokens=job_max_tokens, max_jobs_per_round=jobs, chunk_tokens=1000)
    selected = [list(range(chunks_per_task))] * len(TASKS)
    batch = build_jobs(plan, chunks, selected, options, local)
    return [
        request.model_copy(
            update={
                "messages": (
                    request.messages[0].model_copy(
                        update={"content": f"[{run_tag}] " + request.messages[0].content}
                    ),
                    *request.messages[1:],
                )
            }
        )
        for request in batch.requests[:jobs]
    ]


async def timed_batch(local: Engine, requests: list[GenerationRequest]) -> Timed:
    started = time.perf_counter()
    results = await local.generate(requests)
    return Timed(time.perf_counter() - started, Usage.sum([r.usage for r in results]))


async def timed_sequential(local: Engine, requests: list[GenerationRequest]) -> Timed:
    started = time.perf_counter()
    results: list[GenerationResult] = []
    for request in requests:
        results.extend(await local.generate([request]))
    return Timed(time.perf_counter() - started, Usage.sum([r.usage for r in results]))


def one_token(requests: list[GenerationRequest]) -> list[GenerationRequest]:
    return [request.model_copy(update={"max_tokens": 1}) for request in requests]


async def fanout(local: Engine, args: argparse.Namespace, chunk_tokens: int) -> dict[str, Any]:
    chunks_needed = -(-args.jobs // len(TASKS))
    pages = max(4, chunks_needed * chunk_tokens // 200 + 4)
    document = make_document(pages, words_per_page=150, seed=1).document
    chunks = chunk_documents(
        [document], count_tokens=local.count_tokens, chunk_tokens=chunk_tokens, overlap_tokens=0
    )
    if len(chunks) < chunks_needed:
        raise RuntimeError(f"only {len(chunks)} chunks for {chunks_needed} needed")

    def requests(tag: str, prefill_only: bool = False) -> list[GenerationRequest]:
        built = job_requests(local, chunks, args.jobs, args.job_max_tokens, f"{chunk_tokens}-{tag}")
        return one_token(built) if prefill_only else built

    await local.generate(requests("warmup")[:2])
    logger.info("chunk %d: batched run", chunk_tokens)
    batched = await timed_batch(local, requests("batch"))
    batched_prefill = await timed_batch(local, requests("batch-prefill", prefill_only=True))
    logger.info("chunk %d: sequential run (slow)", chunk_tokens)
    sequential = await timed_sequential(local, requests("seq"))
    sequential_prefill = await timed_sequential(local, requests("seq-prefill", prefill_only=True))
    return {
        "chunk_tokens": chunk_tokens,
        "jobs": args.jobs,
        "prompt_tokens_per_job": round(batched.usage.prompt_tokens / args.jobs),
        "completion_tokens_total": batched.usage.completion_tokens,
        "cached_prompt_tokens": batched.usage.cached_prompt_tokens
        + sequential.usage.cached_prompt_tokens,
        "batched_s": round(batched.seconds, 2),
        "batched_prefill_s": round(batched_prefill.seconds, 2),
        "batched_decode_s": round(max(batched.seconds - batched_prefill.seconds, 0), 2),
        "sequential_s": round(sequential.seconds, 2),
        "sequential_prefill_s": round(sequential_prefill.seconds, 2),
        "sequential_decode_s": round(max(sequential.seconds - sequential_prefill.seconds, 0), 2),
        "speedup": round(sequential.seconds / batched.seconds, 2),
    }


async def remote_tokens(engines: EngineSet, args: argparse.Namespace) -> dict[str, Any]:
    synthetic = make_document(args.pages, seed=2)
    task = Task(question=synthetic.question, documents=(synthetic.document,))
    prices = Settings().prices()
    options = {
        "max_rounds": args.rounds,
        "remote_max_tokens": 512,
        "job_max_tokens": 96,
        "max_tasks_per_round": 4,
        # A Minion reply is meant to be short; the 135M local model fills whatever it may.
        "local_max_tokens": 160,
    }
    report: dict[str, Any] = {
        "pages": args.pages,
        "max_rounds": args.rounds,
        "answer": synthetic.answer,
    }
    for name in ("minions", "minion"):
        protocol = build_protocol(
            name,
            engines.local,
            engines.remote,
            prices,
            remote_stand_in=engines.remote_stand_in,
            **options,
        )
        started = time.perf_counter()
        result = await protocol.run(task)
        report[name] = {
            "remote_prompt_tokens": result.usage.remote.prompt_tokens,
            "remote_completion_tokens": result.usage.remote.completion_tokens,
            "remote_calls": result.usage.remote_requests,
            "local_prompt_tokens": result.usage.local.prompt_tokens,
            "seconds": round(time.perf_counter() - started, 1),
            "answer": result.answer[:120],
            "correct": synthetic.answer in result.answer,
        }
    prompt = RemoteOnly.prompt(task)
    if RemoteOnly.fits(engines.remote, prompt, 256):
        result = await build_protocol(
            "remote_only",
            engines.local,
            engines.remote,
            prices,
            remote_stand_in=engines.remote_stand_in,
            **options,
        ).run(task)
        report["remote_only"] = {
            "remote_prompt_tokens": result.usage.remote.prompt_tokens,
            "measured": True,
            "answer": result.answer[:120],
        }
    else:
        counted = engines.remote.count_tokens(prompt) + CHAT_TEMPLATE_MARGIN // 2
        report["remote_only"] = {"remote_prompt_tokens": counted, "measured": False}
    base = report["remote_only"]["remote_prompt_tokens"]
    for name in ("minions", "minion"):
        report[name]["fraction_of_remote_only"] = round(
            report[name]["remote_prompt_tokens"] / base, 4
        )
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "## MinionS fan-out (`benchmarks/minions_fanout.py`)",
        "",
        f"Device: {report['device']}; local model `{report['local_model']}`; remote "
        f"`{report['remote_model']}`{' (local stand-in)' if report['remote_stand_in'] else ''}.",
        "",
        "| chunk tokens | jobs | batched s (prefill / decode) | sequential s (prefill / decode) "
        "| speedup |",
        "|---|---|---|---|---|",
    ]
    for row in report["fanout"]:
        lines.append(
            f"| {row['chunk_tokens']} | {row['jobs']} | {row['batched_s']} "
            f"({row['batched_prefill_s']} / {row['batched_decode_s']}) | {row['sequential_s']} "
            f"({row['sequential_prefill_s']} / {row['sequential_decode_s']}) | "
            f"{row['speedup']}x |"
        )
    tokens = report.get("remote_tokens")
    if tokens:
        measured = (
            "measured"
            if tokens["remote_only"]["measured"]
            else ("counted, not run: it exceeds the remote's context")
        )
        lines += [
            "",
            f"Remote prompt tokens on a {tokens['pages']}-page synthetic document "
            f"(max_rounds {tokens['max_rounds']}):",
            "",
            "| protocol | remote prompt tokens | fraction of remote_only | target "
            "| answer correct |",
            "|---|---|---|---|---|",
            f"| remote_only | {tokens['remote_only']['remote_prompt_tokens']} ({measured}) | 1 | "
            "| |",
        ]
        for name, target in (("minions", "<= 0.2"), ("minion", "<= 0.05")):
            row = tokens[name]
            lines.append(
                f"| {name} | {row['remote_prompt_tokens']} | {row['fraction_of_remote_only']} | "
                f"{target} | {row['correct']} |"
            )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings()
    async with build_engine_set(settings) as engines:
        report: dict[str, Any] = {
            "device": f"{platform.machine()} CPU" if not _cuda() else _cuda(),
            "local_model": engines.local.model,
            "remote_model": engines.remote.model,
            "remote_stand_in": engines.remote_stand_in,
            "fanout": [],
        }
        for chunk_tokens in args.chunk_tokens:
            report["fanout"].append(await fanout(engines.local, args, chunk_tokens))
        if not args.skip_protocols:
            report["remote_tokens"] = await remote_tokens(engines, args)
    return report


def _cuda() -> str:
    try:
        import torch

        return str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else ""
    except Exception:  # no torch, or a broken CUDA setup: report the CPU
        return ""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument(
        "--chunk-tokens", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 250]
    )
    parser.add_argument("--job-max-tokens", type=int, default=64)
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--skip-protocols", action="store_true")
    parser.add_argument("--write", type=Path, help="upsert the results section in this file")
    return parser.parse_args()


if __name__ == "__main__":  # vLLM spawns worker processes: the guard is required
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    arguments = parse_args()
    result = asyncio.run(main(arguments))
    section = markdown(result)
    sys.stdout.write(json.dumps(result, indent=2) + "\n\n" + section + "\n")
    if arguments.write:
        write_section(arguments.write, "minions_fanout", section)
        logger.info("wrote %s", arguments.write)
