"""``minions-gw run``: answer a question over documents with one protocol."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.common import console, fail, load_settings, run_async
from protocols import PROTOCOLS, Options, Result, Task, build_protocol
from protocols.documents import load_document
from service.engines import build_engine_set

ProtocolChoice = StrEnum("ProtocolChoice", {name: name for name in PROTOCOLS})  # type: ignore[misc]


def run(
    protocol: Annotated[ProtocolChoice, typer.Option(help="which protocol answers")],
    doc: Annotated[
        list[Path], typer.Option("--doc", help="a text or PDF file (repeat for several)")
    ],
    question: Annotated[str, typer.Option(help="the question to answer")],
    json_output: Annotated[
        bool, typer.Option("--json", help="print the full Result as JSON")
    ] = False,
    max_rounds: Annotated[int | None, typer.Option(help="most protocol rounds")] = None,
    chunk_tokens: Annotated[int | None, typer.Option(help="local chunk size in tokens")] = None,
) -> None:
    """Answer a question over documents; print the answer and a usage and cost table."""
    overrides: dict[str, Any] = {}
    if max_rounds is not None:
        overrides["max_rounds"] = max_rounds
    if chunk_tokens is not None:
        overrides["chunk_tokens"] = chunk_tokens
    try:
        documents = [load_document(path, field=f"--doc[{i}]") for i, path in enumerate(doc)]
        task = Task(question=question, documents=tuple(documents), options=Options(**overrides))
    except ValueError as exc:
        fail(str(exc))
    settings = load_settings()

    async def go() -> Result:
        async with build_engine_set(settings) as engines:
            runner = build_protocol(
                protocol.value,
                engines.local,
                engines.remote,
                settings.prices(),
                remote_stand_in=engines.remote_stand_in,
            )
            return await runner.run(task)

    result = run_async(go())
    if json_output:
        console.print_json(result.model_dump_json())
    else:
        console.print(result.answer, highlight=False, markup=False)
        console.print(usage_table(result))
        for warning in result.warnings:
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if result.error is not None:
        fail(f"the run failed: {result.error}")


def usage_table(result: Result) -> Table:
    table = Table(title=f"{result.protocol}: usage and cost")
    for column in ("side", "model", "calls", "prompt", "cached", "completion", "seconds", "USD"):
        table.add_column(column, justify="right" if column not in ("side", "model") else "left")
    usage, timings, cost = result.usage, result.timings, result.cost_usd
    remote_label = "remote (local stand-in)" if result.remote_stand_in else "remote"
    rows = [
        (
            "local",
            result.local_model,
            usage.local_requests,
            usage.local,
            timings.local_s,
            cost.local,
        ),
        (
            remote_label,
            result.remote_model,
            usage.remote_requests,
            usage.remote,
            timings.remote_s,
            cost.remote,
        ),
    ]
    for side, model, calls, tokens, seconds, usd in rows:
        table.add_row(
            side,
            model,
            str(calls),
            str(tokens.prompt_tokens),
            str(tokens.cached_prompt_tokens),
            str(tokens.completion_tokens),
            f"{seconds:.2f}",
            f"{usd:.6f}",
        )
    purposes: dict[str, int] = {}
    for call in usage.remote_calls:
        purposes[call.purpose] = purposes.get(call.purpose, 0) + call.usage.prompt_tokens
    table.caption = (
        f"total {timings.total_s:.2f} s, ${cost.total:.6f}; remote prompt tokens by purpose: "
        + (json.dumps(purposes) if purposes else "none")
    )
    return table
