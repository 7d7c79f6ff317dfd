"""``minions-gw generate`` (one prompt through an engine) and ``minions-gw models``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from cli.common import console, fail, load_settings, run_async, validated
from engines.base import GenerationRequest, GenerationResult
from engines.usage import Usage
from service.engines import build_engine_set

EngineChoice = Literal["local", "remote"]


def _usage_table(result: GenerationResult, engine: str, stand_in: bool, cost: float) -> Table:
    table = Table(title="usage", show_header=True)
    for column in ("engine", "model", "prompt", "cached", "completion", "finish", "cost USD"):
        table.add_column(column)
    label = f"{engine} (local stand-in)" if stand_in else engine
    usage: Usage = result.usage
    table.add_row(
        label,
        result.model,
        str(usage.prompt_tokens),
        str(usage.cached_prompt_tokens),
        str(usage.completion_tokens),
        result.finish_reason,
        f"{cost:.6f}",
    )
    return table


def generate(
    prompt: Annotated[str, typer.Argument(help="the user message")],
    engine: Annotated[str, typer.Option(help="local or remote")] = "local",
    system: Annotated[str | None, typer.Option(help="a system message")] = None,
    max_tokens: Annotated[int, typer.Option(help="most tokens to generate")] = 128,
    temperature: Annotated[float, typer.Option()] = 0.0,
    seed: Annotated[int | None, typer.Option()] = None,
    json_schema: Annotated[
        Path | None, typer.Option(help="a JSON schema file the output must follow")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print JSON instead of text")] = False,
) -> None:
    """Send one prompt through an engine; print the answer and its token usage."""
    if engine not in ("local", "remote"):
        fail(f"engine: must be 'local' or 'remote', got {engine!r}")
    schema = None
    if json_schema is not None:
        try:
            schema = json.loads(json_schema.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            fail(f"json_schema: cannot read {json_schema}: {exc}")
    request = validated(
        GenerationRequest.from_prompt,
        prompt,
        system=system,
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
        json_schema=schema,
    )
    settings = load_settings()

    async def go() -> tuple[GenerationResult, bool, float]:
        async with build_engine_set(settings) as engines:
            chosen = engines.local if engine == "local" else engines.remote
            result = await chosen.generate_one(request)
            stand_in = engine == "remote" and engines.remote_stand_in
            cost = (
                0.0
                if engine == "local" or stand_in
                else settings.prices().cost(result.model, result.usage)
            )
            return result, stand_in, cost

    result, stand_in, cost = run_async(go())
    if json_output:
        payload = {
            "text": result.text,
            "finish_reason": result.finish_reason,
            "model": result.model,
            "engine": engine,
            "remote": {"stand_in": stand_in} if engine == "remote" else None,
            "usage": result.usage.to_dict(),
            "cost_usd": cost,
        }
        console.print_json(json.dumps(payload))
        return
    console.print(result.text, highlight=False, markup=False)
    console.print(_usage_table(result, engine, stand_in, cost))
    if stand_in:
        console.print("[yellow]no remote model configured: the local model stood in for it[/]")


def models() -> None:
    """List the configured engines and models (no model is loaded)."""
    settings = load_settings()
    table = Table(title="engines")
    for column in ("role", "engine", "model", "endpoint", "note"):
        table.add_column(column)
    local = settings.local_engine_spec()
    table.add_row("local", local.kind, local.model, local.base_url or "in-process", "")
    remote = settings.remote_engine_spec()
    if remote is None:
        table.add_row(
            "remote", local.kind, local.model, "in-process", "stand-in: no remote configured"
        )
    else:
        price = settings.prices().price_for(remote.model)
        note = (
            "no price known (billed as 0)"
            if price is None
            else f"${price.input}/M in, ${price.output}/M out"
        )
        table.add_row(
            "remote", remote.kind, remote.model, remote.base_url or "api.openai.com", note
        )
    console.print(table)
