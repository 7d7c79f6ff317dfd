"""Privacy mode's leak rate, accuracy cost and added latency, measured from what the remote got.

    .venv/bin/python benchmarks/privacy_leak.py [--rows 6] [--protocols minions,minion,...]
        [--dataset DIR] [--write docs/benchmarks.md]

Runs every protocol over ``minions-gw bench make-private`` rows (faker-planted names, phone
numbers, e-mails, SSNs, addresses, account and card numbers, dates of birth) with privacy off and
on. A recording engine just around the remote keeps the exact text of every request it received
(beneath privacy mode's ``PrivateEngine``: what really crossed). A planted value leaked when it
appears in any remote request of its run, verbatim or normalized (case-folded; digits only across
one number's separators; ``analysis.privacy_leaks``); the leak rate of an entity type is leaked
values over planted values, over all runs. Accuracy is the harness's (``score_answer``). The
added latency is privacy mode's own time (detect, replace, restore) per remote call.

Then the detector alone over every remote text recorded with privacy off: milliseconds per
remote call, with the spaCy pipeline and with patterns only, without any model in the way.

Engines come from the environment like the CLI (``MGW_*``); without a remote configured the local
model stands in for the remote, and the report says so.

``--detector-only`` runs no model: for each row it pseudonymizes what a ``remote_only`` run sends
(the question and the whole document, one request: no model output in it), as the run would (a
fresh task that learned its documents first), and reports the leak rate by entity type and the
milliseconds per request, with the spaCy pipeline and with patterns only. It is the worst case
for exposure (every planted value is in the text) and is independent of the models.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from doc_sections import write_section

from analysis.answer_scoring import score_answer
from analysis.evaluate import DatasetRow, load_dataset, row_to_task
from analysis.privacy_leaks import Planted, find_leaks
from analysis.private_dataset import make_private_dataset
from engines.base import Engine, GenerationRequest, GenerationResult, WrappedEngine
from protocols import build_protocol
from protocols.privacy.config import PrivacyConfig
from protocols.privacy.detector import shared_detector
from protocols.privacy.pseudonymizer import Pseudonymizer
from protocols.task import Options, PrivacyMode
from service.engines import build_engine_set
from service.settings import Settings

logger = logging.getLogger("benchmarks.privacy_leak")
# The heading the first --write puts above both sections.
HEADING = "## Privacy mode: leak rate, accuracy, latency"

MODES: tuple[PrivacyMode, ...] = ("off", "pseudonymize")


class RecordingEngine(WrappedEngine):
    """The remote, keeping the exact text of every request it receives."""

    def __init__(self, inner: Engine) -> None:
        super().__init__(inner)
        self.texts: list[str] = []

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.texts.extend("\n".join(m.content for m in r.messages) for r in requests)
        return await self.inner.generate(requests)


@dataclass
class Tally:
    runs: int = 0
    correct: int = 0
    errors: int = 0
    remote_calls: int = 0
    privacy_seconds: float = 0.0
    per_call_ms: list[float] = field(default_factory=list)  # one per private run: ms per call
    planted: Counter[str] = field(default_factory=Counter)
    leaked: Counter[str] = field(default_factory=Counter)
    by_kind: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))


def planted_of(row: DatasetRow) -> list[Planted]:
    seen: dict[str, Planted] = {}
    for item in row.metadata["privacy"]["planted"]:
        seen.setdefault(item["value"], Planted(item["entity"], item["value"]))
    return list(seen.values())


async def run_all(
    rows: list[DatasetRow], base: Path, protocols: list[str], settings: Settings
) -> tuple[dict[tuple[str, str], Tally], list[str], dict[str, Any]]:
    tallies: dict[tuple[str, str], Tally] = defaultdict(Tally)
    plain_texts: list[str] = []
    async with build_engine_set(settings) as engines:
        info = {
            "local": engines.local.model,
            "remote": engines.remote.model,
            "stand_in": engines.remote_stand_in,
        }
        for protocol in protocols:
            for mode in MODES:
                tally = tallies[(protocol, mode)]
                for row in rows:
                    remote = RecordingEngine(engines.remote)
                    built = build_protocol(
                        protocol, engines.local, remote, settings.prices(),
                        remote_stand_in=engines.remote_stand_in, privacy=mode,
                    )  # fmt: skip
                    task = row_to_task(row, base, Options(privacy=mode))
                    started = time.perf_counter()
                    run_ms: float | None = None
                    try:
                        result = await built.run(task)
                    except Exception as exc:  # a failed run still says what crossed
                        logger.warning("%s/%s/%s failed: %s", protocol, mode, row.id, exc)
                        tally.errors += 1
                        answer = ""
                    else:
                        answer = result.answer
                        tally.remote_calls += result.usage.remote_requests
                        if result.privacy is not None:
                            tally.privacy_seconds += result.privacy.added_seconds
                            if result.usage.remote_requests:
                                run_ms = (
                                    result.privacy.added_seconds
                                    / result.usage.remote_requests
                                    * 1000
                                )
                                tally.per_call_ms.append(run_ms)
                    planted = planted_of(row)
                    leaked = {
                        leak.planted.value
                        for text in remote.texts
                        for leak in find_leaks(text, planted)
                    }
                    for item in planted:
                        tally.planted[item.entity] += 1
                        tally.leaked[item.entity] += item.value in leaked
                    correct = score_answer(answer, row.references).correct
                    kind = row.metadata["privacy"]["kind"]
                    tally.by_kind[kind][0] += int(correct)
                    tally.by_kind[kind][1] += 1
                    tally.runs += 1
                    tally.correct += int(correct)
                    if mode == "off":
                        plain_texts.extend(remote.texts)
                    logger.info(
                        "%s/%s/%s: %.1fs, %d remote requests, %d leaked, correct %s, "
                        "privacy %s ms per remote call",
                        protocol, mode, row.id, time.perf_counter() - started,
                        len(remote.texts), len(leaked), correct,
                        "-" if run_ms is None else f"{run_ms:.1f}",
                    )  # fmt: skip
    return tallies, plain_texts, info


def detector_cost(texts: list[str], ner: bool, repeats: int = 3) -> dict[str, Any]:
    """Median milliseconds to pseudonymize one remote request's text, cold: a fresh task each
    time and the detector's line cache emptied, so every line goes through the pipeline."""
    config = PrivacyConfig() if ner else PrivacyConfig(ner_model="none")
    detector = shared_detector(config)
    per_call: list[float] = []
    for _ in range(repeats):
        for text in texts:
            detector.clear_cache()
            pseudonymizer = Pseudonymizer(detector)
            started = time.perf_counter()
            pseudonymizer.pseudonymize(text)
            per_call.append((time.perf_counter() - started) * 1000)
    chars = [len(text) for text in texts]
    return {
        "ner_model": detector.ner_model,
        "calls": len(texts),
        "median_chars": int(statistics.median(chars)) if chars else 0,
        "median_ms": round(statistics.median(per_call), 2) if per_call else None,
        "p90_ms": round(statistics.quantiles(per_call, n=10)[-1], 2) if len(per_call) > 1 else None,
    }


def detector_only(rows: list[DatasetRow], base: Path) -> str:
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {platform.machine()}, {platform.system()} "
        f"({_cpus()} CPUs, load average {os.getloadavg()[0]:.1f}), Python "
        f"{platform.python_version()}; `--detector-only`: {len(rows)} rows of `minions-gw bench "
        "make-private`, each the one request a remote_only run sends (question + whole file).",
        "",
    ]
    for ner in (True, False):
        detector = shared_detector(PrivacyConfig() if ner else PrivacyConfig(ner_model="none"))
        planted_count: Counter[str] = Counter()
        leaked_count: Counter[str] = Counter()
        per_request: list[float] = []
        for row in rows:
            task = row_to_task(row, base)
            text = task.question + "\n\n" + "\n\n".join(d.text for d in task.documents)
            detector.clear_cache()  # cold: no line of an earlier row served from the cache
            pseudonymizer = Pseudonymizer(detector)
            started = time.perf_counter()
            for document in task.documents:
                pseudonymizer.learn(document.text)
            crossed = pseudonymizer.pseudonymize(text)
            per_request.append((time.perf_counter() - started) * 1000)
            planted = planted_of(row)
            leaked = {leak.planted.value for leak in find_leaks(crossed, planted)}
            for item in planted:
                planted_count[item.entity] += 1
                leaked_count[item.entity] += item.value in leaked
        types = sorted(planted_count)
        name = f"spaCy `{detector.ner_model}` + patterns" if ner else "patterns only"
        if ner:
            lines += [
                "| detector | " + " | ".join(types) + " | median ms per request | chars |",
                "| --- | " + " | ".join("---:" for _ in types) + " | ---: | ---: |",
            ]
        rates = [f"{leaked_count[t]}/{planted_count[t]}" for t in types]
        chars = statistics.median(len(row_to_task(r, base).documents[0].text) for r in rows)
        lines.append(
            f"| {name} | "
            + " | ".join(rates)
            + f" | {statistics.median(per_request):.0f} | {chars:.0f} |"
        )
    return "\n".join(lines)


def report(
    tallies: dict[tuple[str, str], Tally],
    costs: list[dict[str, Any]],
    info: dict[str, Any],
    rows: int,
) -> str:
    entity_types = sorted({e for t in tallies.values() for e in t.planted})
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {platform.machine()}, "
        f"{platform.system()} ({_cpus()} CPUs), Python {platform.python_version()}; "
        f"{rows} rows of `minions-gw bench make-private` (kinds in turn: no_pii, pii_answer, "
        f"multi_person); local `{info['local']}`, remote `{info['remote']}`"
        + (" (the local model standing in for the remote)" if info["stand_in"] else "")
        + f"; NER: `{costs[0]['ner_model']}`.",
        "",
        "Leak rate (planted values found in any remote request of their run, verbatim or "
        "normalized), by entity type:",
        "",
        "| protocol | privacy | " + " | ".join(entity_types) + " | accuracy | errors |",
        "| --- | --- | " + " | ".join("---:" for _ in entity_types) + " | ---: | ---: |",
    ]
    for (protocol, mode), tally in tallies.items():
        rates = [
            f"{tally.leaked[e] / tally.planted[e]:.0%}" if tally.planted[e] else "-"
            for e in entity_types
        ]
        accuracy = f"{tally.correct}/{tally.runs}"
        lines.append(
            f"| {protocol} | {mode} | " + " | ".join(rates) + f" | {accuracy} | {tally.errors} |"
        )
    lines += [
        "",
        "Privacy mode's added time per remote call, in the runs above (detect, replace, "
        "restore; lines already seen in the process are not analysed again; the documents' "
        "analysis, once per task, is not in it): the median over runs of each run's time per "
        "call, and all runs' time over all their calls:",
        "",
        "| protocol | remote calls | median ms per remote call | mean ms per remote call |",
        "| --- | ---: | ---: | ---: |",
    ]
    for (protocol, mode), tally in tallies.items():
        if mode == "pseudonymize" and tally.remote_calls:
            mean = tally.privacy_seconds / tally.remote_calls * 1000
            median = statistics.median(tally.per_call_ms)
            lines.append(f"| {protocol} | {tally.remote_calls} | {median:.1f} | {mean:.1f} |")
    lines += [
        "",
        "The detector alone, over every remote request recorded with privacy off (a fresh task "
        "per request: nothing cached):",
        "",
        "| detector | requests | median chars | median ms | p90 ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for cost in costs:
        name = f"spaCy `{cost['ner_model']}` + patterns" if cost["ner_model"] else "patterns only"
        lines.append(
            f"| {name} | {cost['calls']} | {cost['median_chars']} | {cost['median_ms']} | "
            f"{cost['p90_ms']} |"
        )
    return "\n".join(lines)


def _cpus() -> int:
    return os.cpu_count() or 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=6)
    parser.add_argument("--protocols", default="minions,minion,remote_only,local_only")
    parser.add_argument("--dataset", type=Path, help="a make-private directory (default: fresh)")
    parser.add_argument("--write", type=Path, help="replace this benchmark's section in the file")
    parser.add_argument("--detector-only", action="store_true", help="no models (see above)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    directory = args.dataset or Path(tempfile.mkdtemp(prefix="mgw-private-"))
    if args.dataset is None:
        make_private_dataset(directory, docs=args.rows)
    rows = load_dataset(directory / "dataset.jsonl", limit=args.rows)
    if args.detector_only:
        body = detector_only(rows, directory)
        sys.stdout.write(body + "\n")
        if args.write:
            write_section(args.write, "privacy_leak_detector", body, heading=HEADING)
        return 0
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    tallies, plain, info = asyncio.run(run_all(rows, directory, protocols, Settings()))
    costs = [detector_cost(plain, ner=True), detector_cost(plain, ner=False)]
    body = report(tallies, costs, info, len(rows))
    sys.stdout.write(body + "\n")
    sys.stdout.write(json.dumps({"costs": costs}) + "\n")
    if args.write:
        write_section(args.write, "privacy_leak", body, heading=HEADING)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
