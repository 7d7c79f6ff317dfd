"""The ``minions-gw`` command line. Each subcommand lives in its own module."""

from __future__ import annotations

import logging

import typer

from cli import bench, doctor, generate, keys, run, runner, serve, study, worker, worker_check

app = typer.Typer(
    name="minions-gw",
    help="minions-gateway: a small local model reads the documents, a large remote model answers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def configure(
    log_level: str = typer.Option("WARNING", "--log-level", help="DEBUG, INFO, WARNING or ERROR"),
) -> None:
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


app.command("generate")(generate.generate)
app.command("models")(generate.models)
app.command("doctor")(doctor.doctor)
app.command("study")(study.study)
app.command("run")(run.run)
app.command("serve")(serve.serve)
app.add_typer(keys.app, name="keys")
app.command("worker")(worker.worker)
app.command("worker-check")(worker_check.worker_check)
app.command("runner")(runner.runner)
app.add_typer(bench.bench_app, name="bench")


def main() -> None:
    app()
