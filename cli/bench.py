"""``minions-gw bench``: accuracy vs cost of protocols on a dataset; ``bench make-synthetic``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from analysis.evaluate import BenchReport, evaluate, plot_accuracy_vs_cost
from analysis.synthetic_dataset import make_synthetic_dataset
from cli.common import console, fail, load_settings, run_async
from protocols import PROTOCOLS
from service.engines import build_engine_set

bench_app = typer.Typer(help="Evaluate protocols: accuracy, tokens, cost, latency.")


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
) -> None:
    """Run protocols over a dataset and report accuracy (95% CI), tokens, cost and latency."""
    if ctx.invoked_subcommand is not None:
        return
    if dataset is None:
        fail("dataset: --dataset FILE.jsonl is required (or use `bench make-synthetic`)", code=2)
    chosen = [p.strip() for p in protocols.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PROTOCOLS]
    if unknown or not chosen:
        fail(f"protocols: unknown {unknown or chosen}; choose from {', '.join(PROTOCOLS)}", code=2)
    settings = load_settings()

    async def go(update: Callable[[int, int, str], None]) -> BenchReport:
        async with build_engine_set(settings) as engines:
            return await evaluate(
                dataset, chosen, local=engines.local, remote=engines.remote,
                prices=settings.prices(), remote_stand_in=engines.remote_stand_in, limit=limit,
                judge=engines.remote if judge else None, progress=update, mi=mi,
            )  # fmt: skip

    with Progress(
        TextColumn("[bold]bench"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[message]}"), TimeElapsedColumn(), console=console,
    ) as bar:  # fmt: skip
        task = bar.add_task("bench", total=None, message="")
        report = run_async(
            go(lambda done, total, msg: bar.update(task, completed=done, total=total, message=msg))
        )
    console.print(report_table(report))
    if report.remote_stand_in:
        console.print("[yellow]no remote model configured: the local model stood in for it[/]")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report.model_dump_json(indent=2))
        plot = plot_accuracy_vs_cost(report, out.with_suffix(".png"))
        console.print(f"report: {out}; plot: {plot}")


def report_table(report: BenchReport) -> Table:
    table = Table(title=f"{report.dataset}: accuracy vs cost")
    columns = ("protocol", "tasks", "accuracy", "95% CI", "F1", "judge", "remote in", "remote out",
               "local tokens", "remote USD", "p50 s", "p95 s", "MI bits", "bits/token",
               "errors")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "protocol" else "right")
    for s in report.summaries:
        table.add_row(
            s.protocol, str(s.tasks), f"{s.accuracy:.3f}",
            f"[{s.accuracy_ci95[0]:.2f}, {s.accuracy_ci95[1]:.2f}]", f"{s.f1:.3f}",
            "-" if s.judge_accuracy is None else f"{s.judge_accuracy:.3f}",
            str(s.remote_prompt_tokens), str(s.remote_completion_tokens), str(s.local_tokens),
            f"{s.remote_cost_usd:.4f}", f"{s.latency_p50_s:.1f}", f"{s.latency_p95_s:.1f}",
            "-" if s.mi_bits is None else f"{s.mi_bits:.3f}",
            "-" if s.bits_per_token is None else f"{s.bits_per_token:.4f}", str(s.errors),
        )  # fmt: skip
    return table


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
