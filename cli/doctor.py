"""``minions-gw doctor``: what the configured local and remote servers are, and what to fix."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table

from cli.common import console, load_settings
from service.doctor import ServerReport, diagnose


class DoctorFormat(StrEnum):
    table = "table"
    json = "json"


def doctor(
    output: Annotated[
        DoctorFormat, typer.Option("--format", help="table (for people) or json")
    ] = DoctorFormat.table,
    timeout_s: Annotated[
        float, typer.Option("--timeout", min=1, help="seconds for each probe request")
    ] = 30.0,
) -> None:
    """Probe the local and remote servers: slots, context window, tokenizer, structured
    outputs, a 1-token latency; exit 1 with a fix for each problem found."""
    settings = load_settings()
    reports = diagnose(settings, timeout_s=timeout_s)
    if output is DoctorFormat.json:
        console.print_json(json.dumps([report.as_dict() for report in reports]))
    else:
        for report in reports:
            console.print(_table(report))
            for problem in report.problems:
                console.print(f"fix: {problem}", highlight=False, markup=False)
            for note in report.notes:
                console.print(f"note: {note}", highlight=False, markup=False)
    if any(not report.ok for report in reports):
        raise typer.Exit(1)


def _table(report: ServerReport) -> Table:
    table = Table(title=f"{report.side}: {report.engine}", show_header=False)
    table.add_column("what")
    table.add_column("found")
    info = report.info
    rows = [
        ("url", report.url or "-"),
        ("model", report.model),
        ("server", f"{info.family} {info.version or ''}".strip() if info else "-"),
        ("slots", str(info.slots) if info and info.slots else "-"),
        ("requests in flight", str(report.concurrency or "-")),
        ("context window", str(report.context_window or "-")),
        ("tokenizer", report.tokenizer),
        ("structured outputs", info.structured if info else "-"),
        ("prompt log-probs (MI)", ("yes" if info.prompt_logprobs else "no") if info else "-"),
        ("1-token latency", f"{report.latency_s:.3f} s" if report.latency_s is not None else "-"),
    ]
    for what, found in rows:
        table.add_row(what, found)
    return table
