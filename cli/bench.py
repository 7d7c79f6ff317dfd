"""``minions-gw bench``: accuracy vs cost of protocols on a dataset; ``bench make-synthetic``,
``bench make-private``."""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from analysis.bench_rows import RowLog, load_rows, rows_path
from analysis.evaluate import (
    BenchReport,
    ProtocolSummary,
    TaskOutcome,
    evaluate,
    plot_accuracy_vs_cost,
)
from analysis.private_dataset import make_private_dataset
from analysis.synthetic_dataset import make_synthetic_dataset
from cli.common import console, errors, fail, load_settings, run_async
from protocols import PROTOCOLS
from service.engines import build_engine_set

bench_app = typer.Typer(help="Evaluate protocols: accuracy, tokens, cost, latency.")

GatewayUrl = Annotated[
    str, typer.Option(envvar="MGW_GATEWAY_URL", help="the gateway to publish to")
]
AdminKeyOption = Annotated[
    str | None, typer.Option(envvar="MGW_ADMIN_KEY", help="an admin key of that gateway")
]
DEFAULT_GATEWAY_URL = "http://127.0.0.1:8000"


class TableFormat(StrEnum):
    table = "table"
    markdown = "markdown"
    json = "json"


@bench_app.callback(invoke_without_command=True)
def bench(
    ctx: typer.Context,
    dataset: Annotated[Path | None, typer.Option(help="a JSONL dataset")] = None,
    protocols: Annotated[
        str, typer.Option(help="comma-separated")
    ] = "minions,minion,remote_only,local_only",
    limit: Annotated[int | None, typer.Option(help="first N rows only")] = None,
    out: Annotated[
        Path | None, typer.Option(help="write the JSON report here (and a plot beside it)")
    ] = None,
    judge: Annotated[
        bool, typer.Option("--judge", help="also ask the remote model to judge")
    ] = False,
    mi: Annotated[
        bool,
        typer.Option(
            "--mi/--no-mi", help="score I(X;Z) of minion/minions compressions (local engine)"
        ),
    ] = True,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="keep the rows already in the --out report's .rows.jsonl; run the rest"
        ),
    ] = False,
    output: Annotated[
        TableFormat,
        typer.Option(
            "--format",
            help="table (plain columns when stdout is not a terminal), markdown or json",
        ),
    ] = TableFormat.table,
    publish: Annotated[
        bool,
        typer.Option("--publish", help="store the report in a gateway (its dashboard shows it)"),
    ] = False,
    gateway_url: GatewayUrl = DEFAULT_GATEWAY_URL,
    admin_key: AdminKeyOption = None,
) -> None:
    """Run protocols over a dataset and report accuracy (95% CI), tokens, cost and latency."""
    if ctx.invoked_subcommand is not None:
        return
    if dataset is None:
        fail("dataset: --dataset FILE.jsonl is required (or use `bench make-synthetic`)", code=2)
    if publish and not admin_key:
        fail("admin-key: --publish needs an admin key (--admin-key or MGW_ADMIN_KEY)", code=2)
    chosen = [p.strip() for p in protocols.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PROTOCOLS]
    if unknown or not chosen:
        fail(f"protocols: unknown {unknown or chosen}; choose from {', '.join(PROTOCOLS)}", code=2)
    if resume and out is None:
        fail("resume: --resume needs --out (its rows file holds the finished rows)", code=2)
    settings = load_settings()
    rows_file = rows_path(out) if out is not None else None
    finished: list[TaskOutcome] = []
    if rows_file is not None:
        if resume:
            try:
                finished = load_rows(rows_file)
            except ValueError as exc:
                fail(f"resume: {exc}", code=2)
        elif rows_file.exists():
            rows_file.unlink()  # a fresh run: the rows of an earlier one are not its own
    log = RowLog(rows_file) if rows_file is not None else None

    async def go(update: Callable[[int, int, str], None]) -> BenchReport:
        async with build_engine_set(settings) as engines:
            return await evaluate(
                dataset, chosen, local=engines.local, remote=engines.remote,
                prices=settings.prices(), remote_stand_in=engines.remote_stand_in, limit=limit,
                judge=engines.remote if judge else None, progress=update, mi=mi,
                finished=finished, on_outcome=log.write if log else None,
            )  # fmt: skip

    with Progress(
        TextColumn("[bold]bench"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[message]}"), TimeElapsedColumn(), console=errors,
    ) as bar:  # fmt: skip
        task = bar.add_task("bench", total=None, message="")
        try:
            report = run_async(
                go(
                    lambda done, total, msg: bar.update(
                        task, completed=done, total=total, message=msg
                    )
                )
            )
        finally:
            if log is not None:
                log.close()
    print_report(report, output)
    # With --format json, stdout is only the JSON: where things went is said on stderr.
    notes = errors if output is TableFormat.json else console
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report.model_dump_json(indent=2))
        plot = plot_accuracy_vs_cost(report, out.with_suffix(".png"))
        notes.print(f"report: {out}; rows: {rows_file}; plot: {plot}", highlight=False)
    if publish:
        run_id = publish_report(report.model_dump_json(), gateway_url, str(admin_key))
        notes.print(f"published to {gateway_url} as {run_id}", highlight=False)


def print_report(report: BenchReport, output: TableFormat) -> None:
    if output is TableFormat.json:
        console.print_json(
            json.dumps([summary.model_dump(mode="json") for summary in report.summaries])
        )
        return
    headers, rows = report_rows(report)
    if output is TableFormat.markdown or not console.is_terminal:
        # Redirected to a file or a pipe, a boxed table is cut to 80 columns: plain text is not.
        console.print(markdown_table(headers, rows), highlight=False, markup=False, soft_wrap=True)
    else:
        console.print(report_table(report))
    if report.remote_stand_in:
        console.print("no remote model configured: the local model stood in for it", style="yellow")


def publish_report(report_json: str, gateway_url: str, admin_key: str) -> str:
    """POST a report to the gateway's ``/v1/admin/bench-runs``; its run id."""
    url = f"{gateway_url.rstrip('/')}/v1/admin/bench-runs"
    headers = {"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"}
    try:
        response = httpx.post(url, content=report_json, headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        fail(f"publish: could not reach {gateway_url}: {exc}")
    if response.status_code != 201:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        fail(f"publish: the gateway refused the report ({response.status_code}): {message}")
    run_id: str = response.json()["id"]
    return run_id


@bench_app.command("publish")
def publish_command(
    report: Annotated[Path, typer.Argument(help="a report written by `bench --out`")],
    gateway_url: GatewayUrl = DEFAULT_GATEWAY_URL,
    admin_key: AdminKeyOption = None,
) -> None:
    """Store an existing bench report in a gateway."""
    if not admin_key:
        fail("admin-key: publishing needs an admin key (--admin-key or MGW_ADMIN_KEY)", code=2)
    try:
        text = report.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"report: cannot read {report}: {exc.strerror}", code=2)
    run_id = publish_report(text, gateway_url, admin_key)
    console.print(f"published {report} to {gateway_url} as {run_id}")


def report_table(report: BenchReport) -> Table:
    headers, rows = report_rows(report)
    table = Table(title=f"{report.dataset}: accuracy vs cost")
    for column in headers:
        table.add_column(column, justify="left" if column == "protocol" else "right")
    for row in rows:
        table.add_row(*row)
    return table


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _summary_row(s: ProtocolSummary) -> list[str]:
    return [
        s.protocol, str(s.tasks), f"{s.accuracy:.3f}",
        f"[{s.accuracy_ci95[0]:.2f}, {s.accuracy_ci95[1]:.2f}]", f"{s.f1:.3f}",
        "-" if s.judge_accuracy is None else f"{s.judge_accuracy:.3f}",
        str(s.remote_prompt_tokens), str(s.remote_completion_tokens), str(s.local_tokens),
        f"{s.remote_cost_usd:.4f}", f"{s.latency_p50_s:.1f}", f"{s.latency_p95_s:.1f}",
        "-" if s.mi_bits is None else f"{s.mi_bits:.3f}",
        "-" if s.bits_per_token is None else f"{s.bits_per_token:.4f}", str(s.errors),
    ]  # fmt: skip


def report_rows(report: BenchReport) -> tuple[list[str], list[list[str]]]:
    headers = ["protocol", "tasks", "accuracy", "95% CI", "F1", "judge", "remote in",
               "remote out", "local tokens", "remote USD", "p50 s", "p95 s", "MI bits",
               "bits/token", "errors"]  # fmt: skip
    rows = [_summary_row(s) for s in report.summaries]
    return headers, rows


@bench_app.command("make-synthetic")
def make_synthetic(
    out: Annotated[Path, typer.Option(help="directory to write the dataset into")] = Path(
        "synthetic-bench"
    ),
    docs: Annotated[int, typer.Option(help="number of documents (one question each)")] = 20,
    pages: Annotated[int, typer.Option(help="pages per document")] = 30,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Write long synthetic documents with planted facts and a dataset.jsonl over them."""
    try:
        path = make_synthetic_dataset(out, docs=docs, pages=pages, seed=seed)
    except ValueError as exc:
        fail(str(exc), code=2)
    console.print(f"dataset: {path}")


@bench_app.command("make-private")
def make_private(
    out: Annotated[Path, typer.Option(help="directory to write the dataset into")] = Path(
        "private-bench"
    ),
    docs: Annotated[int, typer.Option(help="customer files (one question each)")] = 12,
    pages: Annotated[int, typer.Option(help="pages per file (3 hold customer records)")] = 6,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Write customer files with faker-planted personal data and a dataset.jsonl over them
    (questions whose answer needs no PII, is a PII value, or needs several people's records),
    for benchmarks/privacy_leak.py."""
    try:
        path = make_private_dataset(out, docs=docs, pages=pages, seed=seed)
    except ValueError as exc:
        fail(str(exc), code=2)
    console.print(f"dataset: {path}")
