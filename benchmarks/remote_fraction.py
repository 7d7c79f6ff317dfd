"""Remote prompt tokens / baseline with DEFAULT options: what minion and minions send the remote,
as a fraction of what remote_only would (``Result.baseline``, counted with the remote's token
counter), over the 50-page synthetic document and a ~6k-token real-text document (pages of the
Python language reference, ``protocols.real_text``).

    .venv/bin/python benchmarks/remote_fraction.py [--repeats 3] [--pages 50]
        [--write docs/benchmarks.md]

Targets (issue 20): minions <= 0.3, minion <= 0.1, and never above ``max_remote_fraction``
(default 0.5). Engines come from the environment like the CLI (``MGW_*``); without a remote
configured the local model stands in for the remote, and the report says so. The medians of
``--repeats`` runs are reported (with greedy decoding the runs normally agree).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from doc_sections import write_section

from protocols import Task, build_protocol
from protocols.real_text import python_reference
from protocols.synthetic import make_document
from protocols.task import Options
from service.engines import EngineSet, build_engine_set
from service.settings import Settings

logger = logging.getLogger("benchmarks.remote_fraction")

TARGETS = {"minions": 0.3, "minion": 0.1}


def documents(pages: int) -> dict[str, tuple[Task, str]]:
    synthetic = make_document(pages, seed=2)
    real = python_reference()
    return {
        f"synthetic, {pages} pages": (
            Task(question=synthetic.question, documents=(synthetic.document,)),
            synthetic.answer,
        ),
        "Python reference, 4 topics": (
            Task(question=real.question, documents=(real.document,)),
            real.answer,
        ),
    }


async def one_run(engines: EngineSet, name: str, task: Task, answer: str) -> dict[str, Any]:
    protocol = build_protocol(
        name,
        engines.local,
        engines.remote,
        Settings().prices(),
        remote_stand_in=engines.remote_stand_in,
    )
    started = time.perf_counter()
    result = await protocol.run(task)
    baseline = result.baseline.remote_prompt_tokens
    sent = result.usage.remote.prompt_tokens
    return {
        "baseline": baseline,
        "sent": sent,
        "fraction": round(sent / baseline, 4),
        "rounds": len(result.rounds),
        "remote_calls": result.usage.remote_requests,
        "fallbacks": [f.kind for f in result.cost_guard.fallbacks],
        "trimmed": {t.kind: t.count for t in result.cost_guard.trimmed},
        "correct": answer.lower() in result.answer.lower(),
        "seconds": round(time.perf_counter() - started, 1),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "device": f"{platform.machine()} CPU",
        "options": Options().model_dump(),
        "rows": [],
    }
    async with build_engine_set(Settings()) as engines:
        report |= {
            "local_model": engines.local.model,
            "remote_model": engines.remote.model,
            "remote_stand_in": engines.remote_stand_in,
        }
        for label, (task, answer) in documents(args.pages).items():
            for name in ("minions", "minion"):
                runs = []
                for repeat in range(args.repeats):
                    logger.info("%s on %s, run %d", name, label, repeat + 1)
                    runs.append(await one_run(engines, name, task, answer))
                    logger.info("%s", runs[-1])
                report["rows"].append(
                    {
                        "document": label,
                        "protocol": name,
                        "baseline": runs[0]["baseline"],
                        "median_sent": statistics.median(r["sent"] for r in runs),
                        "median_fraction": statistics.median(r["fraction"] for r in runs),
                        "target": TARGETS[name],
                        "runs": runs,
                    }
                )
    return report


def markdown(report: dict[str, Any]) -> str:
    stand_in = " (the local model standing in)" if report["remote_stand_in"] else ""
    lines = [
        "## Remote fraction with default options (`benchmarks/remote_fraction.py`)",
        "",
        f"{report['date']}, {report['device']}; local `{report['local_model']}`, remote "
        f"`{report['remote_model']}`{stand_in}; default options (`max_remote_fraction` "
        f"{report['options']['max_remote_fraction']}, `max_rounds` "
        f"{report['options']['max_rounds']}, K = {report['options']['max_tasks_per_round']}, "
        f"`remote_max_tokens` {report['options']['remote_max_tokens']}). Remote prompt tokens "
        "of all calls / remote_only's (counted), median of "
        f"{len(report['rows'][0]['runs'])} runs:",
        "",
        "| document | protocol | remote_only tokens | sent (median) | fraction | target | "
        "rounds, fallbacks | answer correct |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        first = row["runs"][0]
        met = "met" if row["median_fraction"] <= row["target"] else "**not met**"
        lines.append(
            f"| {row['document']} | {row['protocol']} | {row['baseline']} | "
            f"{row['median_sent']:.0f} | **{row['median_fraction']}** | <= {row['target']}: "
            f"{met} | {first['rounds']}, {', '.join(first['fallbacks']) or 'none'} | "
            f"{first['correct']} |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--write", type=Path, default=None)
    return parser.parse_args()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    arguments = parse_args()
    result = asyncio.run(main(arguments))
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    if arguments.write:
        write_section(arguments.write, "remote_fraction", markdown(result), after="minions_fanout")
