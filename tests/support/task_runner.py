"""Test-only launcher: ``minions-gw runner``'s loop (``cli.runner.run_runner``) over
scripted engines, as its own process, configured from the ``MGW_*`` environment like the real
command.

    python -m support.task_runner [--crash-on TEXT] [--delay SECONDS]

The remote answers ``4817``; ``--crash-on`` kills the whole process (exit 70) when a remote
prompt contains TEXT (a poison task: every runner that takes it dies), ``--delay`` makes each
remote call take that long. Product code never imports this.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence

from cli.runner import run_runner
from service.engines import EngineSet
from service.settings import Settings
from support.scripted_engine import ScriptedEngine, SlowScriptedEngine


async def main(args: argparse.Namespace) -> None:
    local = ScriptedEngine(default="NONE", model="smollm2-135m-instruct", context_window=8192)
    remote = SlowScriptedEngine(
        args.delay, args.crash_on, default="4817", model="gpt-4o", context_window=16_384
    )
    engines = EngineSet(local=local, remote=remote, remote_stand_in=False)
    await run_runner(Settings(), engines=engines)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--crash-on", default=None)
    parser.add_argument("--delay", type=float, default=0.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    asyncio.run(main(parse()))
