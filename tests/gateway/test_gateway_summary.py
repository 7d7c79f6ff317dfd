"""The dashboard's API: summaries kept as tasks settle (overview, accuracy, information), the
filterable task listing over its indexes, published bench runs, and the page's public routes —
over scripted engines and a real Redis."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_helpers import ADMIN_KEY, Gateway, auth
from support.mi_engines import ScoringLocal, remote_planner
from support.processes import CLI, free_port, process_env
from test_gateway_tasks import task_body

from analysis.evaluate import BenchReport, ProtocolSummary
from service import keys
from service.engines import EngineSet
from service.execution import baseline_counters
from service.store.summary import LATENCY_BOUNDS, Settled, bucket_start, percentile
from service.summary import mark_frontier, wilson_ci95
from workers import keys as worker_keys
from workers.queue.registry import heartbeat, registration

ADMIN = auth(ADMIN_KEY)


async def submit(gw: Gateway, key: str, **body: Any) -> str:
    response = await gw.client.post("/v1/tasks", json=task_body(**body), headers=auth(key))
    assert response.status_code == 202, response.text
    task_id: str = response.json()["id"]
    return task_id


async def get(gw: Gateway, path: str, **params: Any) -> dict[str, Any]:
    response = await gw.client.get(path, params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bench_report(**accuracy: float) -> dict[str, Any]:
    """A bench report with one summary per protocol (10 tasks each, USD 0.01 per task for
    remote_only, a tenth of that for the others)."""
    summaries = [
        ProtocolSummary(
            protocol=protocol,
            tasks=10,
            errors=0,
            accuracy=value,
            accuracy_ci95=(max(0.0, value - 0.1), min(1.0, value + 0.1)),
            f1=value,
            judge_accuracy=None,
            remote_prompt_tokens=1000,
            remote_completion_tokens=100,
            local_tokens=5000,
            remote_cost_usd=0.1 if protocol == "remote_only" else 0.01,
            latency_p50_s=1.0,
            latency_p95_s=2.0,
        )
        for protocol, value in accuracy.items()
    ]
    report = BenchReport(
        dataset="bench/dataset.jsonl",
        protocols=list(accuracy),
        remote_model="gpt-4o",
        local_model="smollm2-135m-instruct",
        remote_stand_in=False,
        summaries=summaries,
        outcomes=[],
    )
    return report.model_dump(mode="json")


async def test_overview_counts_tasks_as_they_settle(gw: Gateway) -> None:
    key = await gw.new_key()
    graded = await submit(gw, key, reference_answer="4817")
    wrong = await submit(gw, key, protocol="remote_only", reference_answer="1234")
    views = [await gw.wait_for(task_id, key) for task_id in (graded, wrong)]
    hanging = await submit(gw, key, question="SLOW: what is the access code?")
    await asyncio.wait_for(gw.engines.remote.started.wait(), 10)  # type: ignore[attr-defined]
    cancel = await gw.client.delete(f"/v1/tasks/{hanging}", headers=auth(key))
    assert cancel.status_code == 200
    await gw.wait_for(hanging, key)

    overview = await get(gw, "/v1/admin/summary/overview")
    totals = overview["totals"]
    assert totals["tasks"] == 3
    assert (totals["succeeded"], totals["failed"], totals["cancelled"]) == (2, 0, 1)
    assert totals["by_protocol"] == {"minions": 2, "remote_only": 1}
    # The same spend the usage counters billed (the cancelled task's aborted call included).
    spent = sum(view["result"]["cost_usd"]["total"] for view in views)
    billed = (await get(gw, "/v1/admin/usage", by="protocol"))["data"]
    assert totals["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in billed.values()))
    assert totals["cost_usd"] > spent > 0
    usage = sum(
        view["result"]["usage"]["remote"]["prompt_tokens"]
        + view["result"]["usage"]["remote"]["completion_tokens"]
        for view in views
    )
    assert totals["remote_tokens"] >= usage > 0 and totals["local_tokens"] > 0
    # The hour buckets: 48 of them, oldest first, the last one this hour's with every task.
    series = overview["series"]
    assert len(series) == 48 and series[-1]["start"] == bucket_start(time.time(), "hour")
    assert series[-1]["tasks"] == 3 and series[-1]["by_status"]["cancelled"] == 1
    assert sum(row["tasks"] for row in series[:-1]) == 0
    latency = overview["latency"]
    assert latency["count"] == 3 and 0 < latency["p50_s"] <= latency["p95_s"]
    assert overview["queue"] == {"tasks_waiting": 0, "jobs_waiting": 0, "dead_lettered": 0}
    days = await get(gw, "/v1/admin/summary/overview", bucket="day")
    assert len(days["series"]) == 30 and days["series"][-1]["tasks"] == 3

    accuracy = await get(gw, "/v1/admin/summary/accuracy")
    rows = {row["protocol"]: row for row in accuracy["tasks"]}
    assert rows["minions"]["graded"] == 1 and rows["minions"]["exact_match_rate"] == 1.0
    assert rows["remote_only"]["graded"] == 1 and rows["remote_only"]["exact_match_rate"] == 0.0
    assert rows["minions"]["ci95"] == pytest.approx(list(wilson_ci95(1, 1)))
    points = {p["protocol"]: p for p in accuracy["frontier"]}
    assert points["minions"]["source"] == "gateway tasks"
    assert points["minions"]["accuracy"] == 1.0 and points["minions"]["on_frontier"]
    cheaper = points["remote_only"]["cost_usd"] < points["minions"]["cost_usd"]
    assert points["remote_only"]["accuracy"] == 0.0
    assert points["remote_only"]["on_frontier"] == cheaper  # only a cheaper one can be on it


async def test_task_listing_filters_through_indexes_and_pages(gw: Gateway) -> None:
    key = await gw.new_key()
    other = await gw.new_key()
    mine = [await submit(gw, key, protocol=p) for p in ("minions", "remote_only", "minions")]
    theirs = await submit(gw, other, protocol="local_only")
    for task_id in mine:
        await gw.wait_for(task_id, key)
    await gw.wait_for(theirs, other)

    everything = await get(gw, "/v1/admin/tasks")
    assert [row["id"] for row in everything["data"]] == [theirs, *reversed(mine)]
    assert everything["next_cursor"] is None
    row = everything["data"][1]
    assert row["status"] == "succeeded" and row["latency_s"] > 0 and row["cost_usd"] > 0

    minions = await get(gw, "/v1/admin/tasks", protocol="minions", status="succeeded")
    assert [r["id"] for r in minions["data"]] == [mine[2], mine[0]]
    by_key = await get(gw, "/v1/admin/tasks", key_id=everything["data"][0]["key_id"])
    assert [r["id"] for r in by_key["data"]] == [theirs]
    assert (await get(gw, "/v1/admin/tasks", status="failed"))["data"] == []
    # The indexes the filters use are sorted sets, filled when tasks settle or are created.
    assert await gw.store.redis.zcard(keys.tasks_with_status("succeeded")) == 4
    assert await gw.store.redis.zcard(keys.tasks_of_protocol("minions")) == 2

    seen, cursor = [], None
    while True:
        page = await get(gw, "/v1/admin/tasks", limit=1, **({"cursor": cursor} if cursor else {}))
        seen += [r["id"] for r in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [theirs, *reversed(mine)]

    bad = await gw.client.get("/v1/admin/tasks", params={"status": "done"}, headers=ADMIN)
    assert bad.status_code == 422 and "status" in bad.text
    tenant = await gw.client.get("/v1/admin/tasks", headers=auth(key))
    assert tenant.status_code == 403


async def test_bench_runs_are_published_listed_and_drawn_on_the_frontier(gw: Gateway) -> None:
    report = bench_report(minions=0.8, remote_only=0.9, local_only=0.3)
    created = await gw.client.post("/v1/admin/bench-runs", json=report, headers=ADMIN)
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]

    listed = await get(gw, "/v1/admin/bench-runs")
    assert [run["id"] for run in listed["data"]] == [run_id]
    assert listed["data"][0]["tasks"] == 30
    assert listed["data"][0]["protocols"] == ["minions", "remote_only", "local_only"]
    stored = await get(gw, f"/v1/admin/bench-runs/{run_id}")
    assert stored["summaries"] == report["summaries"] and stored["outcomes"] == []

    accuracy = await get(gw, "/v1/admin/summary/accuracy")
    frontier = {p["protocol"]: p for p in accuracy["frontier"]}
    assert frontier["minions"]["cost_usd"] == pytest.approx(0.001)
    assert frontier["remote_only"]["accuracy"] == 0.9
    assert frontier["remote_only"]["ci95"] == pytest.approx([0.8, 1.0])
    assert frontier["minions"]["on_frontier"] and frontier["remote_only"]["on_frontier"]
    assert not frontier["local_only"]["on_frontier"]  # as cheap as minions, less accurate
    assert accuracy["bench_runs"][0]["id"] == run_id

    broken = dict(report, summaries=[{"protocol": "minions"}])
    refused = await gw.client.post("/v1/admin/bench-runs", json=broken, headers=ADMIN)
    assert refused.status_code == 422 and "summaries" in refused.text
    assert len((await get(gw, "/v1/admin/bench-runs"))["data"]) == 1  # nothing half-written
    missing = await gw.client.get("/v1/admin/bench-runs/bench_nope", headers=ADMIN)
    assert missing.status_code == 404


async def test_mi_estimates_are_summed_per_protocol_and_local_model(
    make_gateway: Callable[..., Any],
) -> None:
    local = ScoringLocal(model="smollm2-135m-instruct", context_window=8192)
    engines = EngineSet(local=local, remote=remote_planner(), remote_stand_in=False)
    async with make_gateway(engines) as gw:
        key = await gw.new_key()
        estimates = []
        for index in range(2):
            body = task_body(
                documents=[{"text": f"Noise.\fThe access code is {4817 + index}.\fLunch."}],
                reference_answer=str(4817 + index),
            )
            response = await gw.client.post("/v1/tasks", json=body, headers=auth(key))
            task_id = response.json()["id"]
            deadline = time.monotonic() + 30
            while True:
                view = (await gw.client.get(f"/v1/tasks/{task_id}", headers=auth(key))).json()
                if view["mi"] and view["mi"]["status"] != "pending":
                    break
                assert time.monotonic() < deadline, view
                await asyncio.sleep(0.02)
            assert view["mi"]["status"] == "succeeded", view["mi"]
            estimates.append(view)
        info = await get(gw, "/v1/admin/summary/information")
    [row] = info["rows"]
    assert (row["protocol"], row["local_model"], row["tasks"]) == (
        "minions",
        "smollm2-135m-instruct",
        2,
    )
    bits = [view["mi"]["mi_bits"] for view in estimates]
    tokens = [view["mi"]["mean_compression_tokens"] for view in estimates]
    assert row["mi_bits"] == pytest.approx(sum(bits) / 2, abs=1e-5)
    assert row["bits_per_token"] == pytest.approx(sum(bits) / sum(tokens), abs=1e-5)
    # Graded tasks give the scatter's points, newest first.
    assert [p["task_id"] for p in info["points"]] == [v["id"] for v in reversed(estimates)]
    assert info["points"][0]["f1"] == estimates[1]["accuracy"]["f1"]


async def test_the_baseline_is_summed_and_gives_the_savings_factor(gw: Gateway) -> None:
    """Result.baseline (the remote-only counterfactual) as the counters take it."""
    store = gw.store
    now = time.time()
    async with store.redis.pipeline(transaction=True) as pipe:
        for cost, baseline in ((1_000, 30_000), (3_000, 50_000)):
            await store.summary.queue_settled(
                pipe,
                Settled(
                    protocol="minions",
                    status="succeeded",
                    finished_at=now,
                    latency_s=2.0,
                    cost_nano=cost,
                    baseline_nano=baseline,
                    baseline_prompt_tokens=10_000,
                ),
            )
        # A task without a priced baseline adds its spend, not to the savings factor.
        await store.summary.queue_settled(
            pipe, Settled("remote_only", "succeeded", now, 1.0, cost_nano=9_000)
        )
        await pipe.execute()
    totals = (await get(gw, "/v1/admin/summary/overview"))["totals"]
    assert totals["cost_usd"] == pytest.approx(13_000e-9)
    assert totals["baseline_usd"] == pytest.approx(80_000e-9)
    assert totals["savings_factor"] == pytest.approx(20.0)
    assert totals["baseline_tasks"] == 2 and totals["baseline_remote_prompt_tokens"] == 20_000
    assert baseline_counters(None) == {}
    assert baseline_counters(
        {"remote_prompt_tokens": 12, "exceeds_context": False, "usd": 0.5, "savings_factor": 3}
    ) == {"baseline_tasks": 1, "baseline_prompt_tokens": 12, "baseline_nano": 500_000_000}
    unpriced = {"remote_prompt_tokens": 7, "exceeds_context": True, "usd": None}
    assert baseline_counters(unpriced) == {"baseline_tasks": 1, "baseline_prompt_tokens": 7}


def test_percentiles_from_the_latency_histogram() -> None:
    assert percentile({}, 0.5) is None
    histogram = {3: 50, 10: 45, 20: 5}
    assert percentile(histogram, 0.5) == LATENCY_BOUNDS[3]
    assert percentile(histogram, 0.95) == LATENCY_BOUNDS[10]
    assert percentile(histogram, 0.96) == LATENCY_BOUNDS[20]
    assert LATENCY_BOUNDS[-1] > 3600  # an hour-long task still lands in a bucket of its own size


def test_wilson_interval_and_frontier() -> None:
    low, high = wilson_ci95(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_ci95(0, 0) == (0.0, 1.0)
    points = [
        {"cost_usd": 1.0, "accuracy": 0.9},
        {"cost_usd": 0.1, "accuracy": 0.8},
        {"cost_usd": 0.1, "accuracy": 0.5},
        {"cost_usd": 2.0, "accuracy": 0.9},
    ]
    assert [p["on_frontier"] for p in mark_frontier(points)] == [True, True, False, False]
    assert not math.isnan(high)


async def test_the_page_and_assets_are_public_and_the_data_is_not(gw: Gateway) -> None:
    page = await gw.client.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<form id="login-form">' in page.text
    for asset in ("js/app.js", "js/views/overview.js", "css/dashboard.css"):
        response = await gw.client.get(f"/dashboard/static/{asset}")
        assert response.status_code == 200, asset
    chart = await gw.client.get("/dashboard/static/vendor/chart.umd.min.js")
    assert chart.status_code == 200 and "Chart.js v4" in chart.text[:200]
    assert (await gw.client.get("/dashboard/static/../auth.py")).status_code == 404
    for path in (
        "/v1/admin/summary/overview",
        "/v1/admin/summary/accuracy",
        "/v1/admin/summary/information",
        "/v1/admin/bench-runs",
        "/v1/admin/tasks",
        "/v1/studies",
    ):
        assert (await gw.client.get(path)).status_code == 401, path
        wrong = await gw.client.get(path, headers=auth("mgw_wrong_key"))
        assert wrong.status_code == 401, path
    tenant = await gw.new_key()
    assert (
        await gw.client.get("/v1/admin/summary/overview", headers=auth(tenant))
    ).status_code == 403


async def test_workers_report_has_heartbeat_ages_and_the_study_queue(
    make_gateway: Callable[..., Any],
) -> None:
    # With a local pool the workers, not the gateway, consume the study queue.
    async with make_gateway(local_pool="gpu-a") as gw:
        await check_workers_report(gw)


async def check_workers_report(gw: Gateway) -> None:
    redis = gw.store.redis
    # A worker as ``minions-gw worker`` registers itself, and a study consumer that read the queue.
    info = registration(gw.engines.local, "gpu-a", batch=32)
    await heartbeat(redis, "gpu-a@host-1", info, ttl_s=30)
    await redis.xgroup_create(worker_keys.STUDY_STREAM, worker_keys.STUDY_GROUP, mkstream=True)
    await redis.xadd(worker_keys.STUDY_STREAM, {"study": "study_x"})
    await redis.xreadgroup(
        worker_keys.STUDY_GROUP, "worker-7", {worker_keys.STUDY_STREAM: ">"}, count=1
    )
    await redis.xadd(worker_keys.STUDY_STREAM, {"study": "study_y"})
    report = await get(gw, "/v1/admin/workers")
    [pool] = [p for p in report["pools"] if p["pool"] == "gpu-a"]
    [worker] = pool["workers"]
    assert worker["name"] == "gpu-a@host-1" and worker["batch"] == "32"
    assert worker["model"] == "smollm2-135m-instruct" and 0 <= worker["heartbeat_age_s"] < 5
    assert report["studies_waiting"] == 1
    [consumer] = report["study_consumers"]
    assert consumer["name"] == "worker-7" and consumer["pending"] == 1 and consumer["idle_s"] >= 0
    studies = await get(gw, "/v1/studies")
    assert studies["data"] == [] and {"gp", "ssm", "lora"} <= set(studies["available"])


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """``minions-gw`` as its own process, while this loop keeps serving the gateway."""
    process = await asyncio.create_subprocess_exec(
        *CLI, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    return int(process.returncode or 0), output.decode()


async def test_bench_publish_stores_a_report_in_the_gateway(
    make_server: Callable[..., Any], tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps(bench_report(minions=0.7, remote_only=0.95)))
    async with make_server() as (url, _app):
        env = process_env(MGW_GATEWAY_URL=url, MGW_ADMIN_KEY=ADMIN_KEY)
        code, output = await run_cli("bench", "publish", str(report), env=env)
        assert code == 0, output
        runs = await _runs(url)
        assert len(runs) == 1 and runs[0]["id"] in output and runs[0]["tasks"] == 20
        # A wrong key, a broken report and a gateway that is not there: clear errors, exit 1.
        code, output = await run_cli("bench", "publish", str(report), env=env | {
            "MGW_ADMIN_KEY": "mgw_wrong"})  # fmt: skip
        assert code == 1 and "refused the report (401)" in output
        broken = tmp_path / "broken.json"
        broken.write_text('{"dataset": "x"}')
        code, output = await run_cli("bench", "publish", str(broken), env=env)
        assert code == 1 and "(422)" in output and "protocols" in output
        code, output = await run_cli("bench", "publish", str(report), env=env | {
            "MGW_GATEWAY_URL": f"http://127.0.0.1:{free_port()}"})  # fmt: skip
        assert code == 1 and "could not reach" in output
        assert len(await _runs(url)) == 1  # nothing stored by the refused ones


async def _runs(url: str) -> list[Any]:
    async with httpx.AsyncClient(base_url=url) as client:
        data: list[Any] = (await client.get("/v1/admin/bench-runs", headers=ADMIN)).json()["data"]
        return data
