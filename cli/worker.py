"""``minions-gw worker``: serve one pool's local-LM jobs from the Redis queue until SIGTERM."""

from __future__ import annotations

import dataclasses
import logging
from typing import Annotated

import typer
from redis.exceptions import RedisError

from analysis.studies import study_registry
from cli.common import (
    RedisUrlOption,
    console,
    fail,
    load_settings,
    private_data_dir,
    redis_client_for,
    redis_url_for,
    run_async,
)
from engines.factory import ADAPTERS, create_engine
from workers import keys
from workers.studies.consumer import StudyConsumer
from workers.worker import Worker, run_until_signalled

logger = logging.getLogger(__name__)


def worker(
    engine: Annotated[
        str | None,
        typer.Option(
            help="vllm (in-process) or openai (an OpenAI-compatible server); "
            "default MGW_LOCAL_ENGINE"
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="the model to serve; default MGW_LOCAL_MODEL")
    ] = None,
    pool: Annotated[
        str, typer.Option(envvar="MGW_WORKER_POOL", help="the job pool to serve")
    ] = "default",
    batch: Annotated[
        int | None,
        typer.Option(
            min=1, help="jobs read (and run as one batch) at a time; default MGW_LOCAL_MAX_NUM_SEQS"
        ),
    ] = None,
    redis_url: RedisUrlOption = None,
    base_url: Annotated[
        str | None, typer.Option(help="the server of --engine openai; default MGW_LOCAL_BASE_URL")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="consumer name; default <pool>@<host>-<pid>-<random>")
    ] = None,
    studies: Annotated[
        bool,
        typer.Option(
            "--studies/--no-studies",
            help="also run queued research studies (POST /v1/studies/...), one at a time, in a "
            "niced child process, only while no language-model job waits",
        ),
    ] = True,
    study_threads: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="torch threads of a study; default MGW_STUDY_THREADS"),
    ] = None,
) -> None:
    """Run local-model jobs from the queue on this machine's engine; SIGTERM stops gracefully."""
    settings = load_settings()
    private_data_dir(settings.data_dir)
    url = redis_url_for(settings, redis_url)
    kind = engine or settings.local_engine
    if kind not in ADAPTERS:
        fail(f"engine: must be one of {sorted(ADAPTERS)}, got {kind!r}", code=2)
    for label, value in (("pool", pool), ("name", name)):
        if value is not None:
            try:
                keys.check_name(label, value)
            except ValueError as exc:
                fail(str(exc), code=2)
    spec = dataclasses.replace(
        settings.local_engine_spec(),
        kind=kind,  # type: ignore[arg-type]  # checked against ADAPTERS above
        model=model or settings.local_model,
        base_url=base_url or settings.local_base_url,
    )

    async def serve() -> None:
        client = redis_client_for(settings, url)
        try:
            try:
                await client.ping()
            except (RedisError, OSError) as exc:
                fail(f"redis_url: cannot reach Redis at {url}: {exc}")
            local = create_engine(spec)
            try:
                queue_worker = Worker(
                    client,
                    local,
                    pool=pool,
                    batch=batch or settings.local_max_num_seqs,
                    consumer_name=name,
                )
                sidecars = []
                if studies:
                    sidecars.append(
                        StudyConsumer(
                            client,
                            settings.data_dir,
                            registry=study_registry(settings.extra_studies),
                            name=queue_worker.name,
                            threads=study_threads or settings.study_threads,
                            may_start=lambda: queue_worker.idle,
                        )
                    )
                console.print(
                    f"worker {queue_worker.name}: {spec.kind} {spec.model}, pool {pool!r}, "
                    f"batch {queue_worker.batch}" + (", studies" if studies else ""),
                    highlight=False,
                )
                await run_until_signalled(queue_worker, *sidecars)
            finally:
                await local.aclose()
        finally:
            await client.aclose()

    run_async(serve())
