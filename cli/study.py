"""``minions-gw study``: run one sidecar research study and write its result and figures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from cli.common import console, fail


def study(
    name: Annotated[str, typer.Argument(help="gp, ssm or lora")],
    out: Annotated[Path, typer.Option(help="directory for result.json and figures")],
    preset: Annotated[str, typer.Option(help="quick (CPU, minutes) or full (GPU)")] = "quick",
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Run a study (quick preset: a couple of minutes on 2 CPU cores)."""
    from analysis.studies import load_study
    from analysis.studies.base import run_study

    if preset not in ("quick", "full"):
        fail(f"preset: must be 'quick' or 'full', got {preset!r}")
    if device not in ("cpu", "cuda"):
        fail(f"device: must be 'cpu' or 'cuda', got {device!r}")
    try:
        module = load_study(name)
        params = module.Params.preset(preset, device=device, seed=seed)  # type: ignore[arg-type]
    except ValueError as exc:
        fail(str(exc))
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[message]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(name, total=None, message="")

        def progress(done: int, total: int, message: str = "") -> None:
            bar.update(task, completed=done, total=total, message=message)

        try:
            result = run_study(name, params, out, progress)
        except ValueError as exc:
            fail(str(exc))
    console.print(
        f"study {name} done in {result.seconds:.1f} s on {result.device_name}: "
        f"{out / 'result.json'}"
    )
