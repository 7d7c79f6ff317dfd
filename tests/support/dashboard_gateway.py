"""Test-only launcher: the real gateway app (``gateway.app.create_app``) served by uvicorn on
127.0.0.1, over scripted engines whose mutual information is known (``support.mi_engines``), as
its own process, configured from the ``MGW_*`` environment like ``minions-gw serve``.

    python -m support.dashboard_gateway --port PORT [--slow-s SECONDS]

A remote prompt containing ``SLOW`` takes ``--slow-s`` per call (a task to watch live); one
containing ``HANG`` waits a minute (a task to cancel). Product code never imports this.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence

import uvicorn

from engines.base import GenerationRequest, GenerationResult
from gateway.app import create_app
from service.engines import EngineSet
from service.settings import Settings
from support.mi_engines import ScoringLocal, remote_planner
from support.scripted_engine import ScriptedEngine


class PacedRemote(ScriptedEngine):
    """The MI tests' remote planner, slowed down on ``SLOW`` and held on ``HANG``."""

    def __init__(self, slow_s: float) -> None:
        planner = remote_planner()
        super().__init__(
            planner.rules, default=planner.default, model=planner.model, context_window=100_000
        )
        self.slow_s = slow_s

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        text = "\n".join(m.content for r in requests for m in r.messages)
        if "HANG" in text:
            await asyncio.sleep(60)
        elif "SLOW" in text:
            await asyncio.sleep(self.slow_s)
        return await super().generate(requests)


async def main(args: argparse.Namespace) -> None:
    local = ScoringLocal(model="smollm2-135m-instruct", context_window=8192)
    engines = EngineSet(local=local, remote=PacedRemote(args.slow_s), remote_stand_in=False)
    app = create_app(Settings(), engines=engines)
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning")
    await uvicorn.Server(config).serve()


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slow-s", type=float, default=3.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    asyncio.run(main(parse()))
