"""The dashboard in a real browser: Debian's Chromium driven by Playwright against the real
gateway (its own process, uvicorn on 127.0.0.1, scripted engines whose MI is known) with seeded
tasks, a published bench run and a study run through the page. Every view must show the seeded
numbers, a running task's page must update live and cancel, a wrong key must be refused, and no
page may log a console error or get a failed request. Screenshots of each view are saved under
the test's temporary directory."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from gateway_helpers import ADMIN_KEY, auth
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Response,
    ViewportSize,
    sync_playwright,
)
from support.processes import Process, Processes, free_port, process_env
from test_gateway_summary import bench_report

from service.store import Store
from service.store.connection import client_for
from service.store.summary import Settled

pytestmark = pytest.mark.slow
ADMIN = auth(ADMIN_KEY)
PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1280, "height": 900}


def doc(value: int) -> str:
    return f"The weather was mild.\fThe access code is {value}.\fLunch is at noon."


def task(protocol: str, value: int, reference: str, question: str = "What is the code?") -> Any:
    return {
        "protocol": protocol,
        "question": question,
        "documents": [{"text": doc(value), "name": f"doc{value}.txt"}],
        "options": {"chunking": "pages"},
        "reference_answer": reference,
    }


@dataclass
class Dashboard:
    url: str
    client: httpx.Client
    shots: Path
    tasks: list[dict[str, Any]] = field(default_factory=list)
    bench_id: str = ""

    def submit(self, body: dict[str, Any]) -> str:
        response = self.client.post("/v1/tasks", json=body, headers=ADMIN)
        assert response.status_code == 202, response.text
        task_id: str = response.json()["id"]
        return task_id

    def wait(self, task_id: str, *, scored: bool = False, limit_s: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + limit_s
        while True:
            view: dict[str, Any] = self.client.get(f"/v1/tasks/{task_id}", headers=ADMIN).json()
            done = view["status"] in ("succeeded", "failed", "cancelled")
            if done and not (scored and view["mi"] and view["mi"]["status"] == "pending"):
                return view
            assert time.monotonic() < deadline, view
            time.sleep(0.05)

    def api(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, params=params, headers=ADMIN)
        assert response.status_code == 200, response.text
        return response.json()


async def _seed_baseline(redis_url: str) -> None:
    """One settled task's remote-only counterfactual (what ``Result.baseline`` adds when a task
    settles): $0.000001 spent where remote-only would have cost $0.00003, 30x less."""
    store = Store(client_for(redis_url))
    async with store.redis.pipeline(transaction=True) as pipe:
        settled = Settled(
            protocol="minions",
            status="succeeded",
            finished_at=time.time(),
            latency_s=1.0,
            cost_nano=1_000,
            baseline_nano=30_000,
            baseline_prompt_tokens=12_345,
        )
        await store.summary.queue_settled(pipe, settled)
        await pipe.execute()
    await store.aclose()


@pytest.fixture(scope="module")
def dashboard(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    redis.Redis.from_url(redis_url).flushdb()
    directory = tmp_path_factory.mktemp("dashboard")
    processes = Processes(directory)
    port = free_port()
    env = process_env(
        MGW_REDIS_URL=redis_url,
        MGW_ADMIN_KEY=ADMIN_KEY,
        MGW_DATA_DIR=str(directory / "data"),
        MGW_EXTRA_STUDIES=json.dumps({"fake": "support.fake_study"}),
        MGW_MI_ENABLED="true",
    )
    gateway: Process = processes.start(
        "gateway", [sys.executable, "-m", "support.dashboard_gateway", "--port", str(port)], env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        gateway.wait_ready(url)
        with httpx.Client(base_url=url, timeout=30) as client:
            board = Dashboard(url, client, directory / "screenshots")
            board.shots.mkdir()
            ids = [
                board.submit(task("minions", 4817, "4817")),
                board.submit(task("minions", 5120, "5120")),
                board.submit(task("remote_only", 6001, "1234")),
            ]
            board.tasks = [board.wait(task_id, scored=True) for task_id in ids]
            answers = [(t["status"], (t["result"] or {}).get("answer")) for t in board.tasks]
            assert answers == [("succeeded", "4817"), ("succeeded", "5120"), ("succeeded", "6001")]
            created = client.post("/v1/admin/bench-runs", json=bench_report(
                minions=0.8, remote_only=0.9, local_only=0.3), headers=ADMIN)  # fmt: skip
            assert created.status_code == 201, created.text
            board.bench_id = created.json()["id"]
            asyncio.run(_seed_baseline(redis_url))
            yield board
    finally:
        processes.close()
        redis.Redis.from_url(redis_url).flushdb()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    assert executable, "Chromium is missing: apt-get install chromium (.ci/run installs it)"
    with sync_playwright() as playwright:
        the_browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        yield the_browser
        the_browser.close()


class Problems:
    """Console errors, uncaught exceptions and failed or refused requests of one page."""

    def __init__(self, page: Page, allowed_status: frozenset[int] = frozenset()) -> None:
        self.seen: list[str] = []
        self.allowed = allowed_status
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.seen.append(f"page error: {error}"))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def _console(self, message: ConsoleMessage) -> None:
        # Chromium also logs each refused response; those the test expects are not problems.
        expected = any(f"status of {status} " in message.text for status in self.allowed)
        if message.type == "error" and not expected:
            self.seen.append(f"console: {message.text}")

    def _failed(self, request: Any) -> None:
        # Leaving a live task page aborts its event stream on purpose.
        if "/events" not in request.url:
            self.seen.append(f"failed: {request.url} {request.failure}")

    def _response(self, response: Response) -> None:
        if response.status >= 400 and response.status not in self.allowed:
            self.seen.append(f"{response.status}: {response.url}")


@pytest.fixture
def page(browser: Browser) -> Iterator[tuple[Page, Problems]]:
    context = browser.new_context(viewport=DESKTOP)
    the_page = context.new_page()
    the_page.set_default_timeout(20_000)
    problems = Problems(the_page)
    yield the_page, problems
    context.close()


def sign_in(page: Page, url: str, key: str = ADMIN_KEY) -> None:
    page.goto(f"{url}/dashboard")
    page.fill("#login-key", key)
    page.click("#login-form button[type=submit]")


def show(page: Page, route: str) -> None:
    """Go to ``route`` (``#/...``) and wait until its view has rendered."""
    page.evaluate("route => { location.hash = route; }", route)
    page.wait_for_selector(f'#view[data-ready="true"][data-route="{route}"]')


def metric(page: Page, name: str) -> str:
    return page.inner_text(f'[data-metric="{name}"] .stat-value')


def chart_data(page: Page, canvas: str) -> Any:
    return page.evaluate(
        """id => Chart.getChart(id).data.datasets.map(d => ({label: d.label, data: d.data}))""",
        canvas,
    )


def snap(page: Page, board: Dashboard, name: str) -> None:
    page.screenshot(path=str(board.shots / f"{name}.png"), full_page=True)


def test_every_view_shows_the_seeded_numbers(
    dashboard: Dashboard, page: tuple[Page, Problems]
) -> None:
    the_page, problems = page
    sign_in(the_page, dashboard.url)
    the_page.wait_for_selector('#view[data-ready="true"][data-view="overview"]')
    assert the_page.evaluate("Object.keys(localStorage).length") == 0
    assert the_page.evaluate("sessionStorage.getItem('mgw.adminKey')") == ADMIN_KEY

    # Overview: three real tasks (each Result carries its baseline) and the seeded settled task.
    overview = dashboard.api("/v1/admin/summary/overview")
    totals = overview["totals"]
    results = [t["result"] for t in dashboard.tasks]
    baseline_usd = 0.00003 + sum(r["baseline"]["usd"] for r in results)
    spent_usd = 0.000001 + sum(r["cost_usd"]["total"] for r in results)
    tokens = 12_345 + sum(r["baseline"]["remote_prompt_tokens"] for r in results)
    saved = baseline_usd / spent_usd
    assert totals["tasks"] == 4 and totals["savings_factor"] == pytest.approx(saved, rel=1e-3)
    assert metric(the_page, "tasks") == "4"
    assert metric(the_page, "succeeded") == "4" and metric(the_page, "failed") == "0"
    assert metric(the_page, "savings") == (f"{saved:.0f}×" if saved >= 10 else f"{saved:.1f}×")
    assert metric(the_page, "baseline") == f"${baseline_usd:.{6 if baseline_usd < 0.01 else 4}f}"
    headline = the_page.inner_text('[data-metric="headline"]')
    assert headline.startswith("Spent $") and " on 4 tasks" in headline
    assert f"{tokens:,} prompt tokens" in headline
    assert metric(the_page, "local-tokens") == f"{totals['local_tokens']:,}"
    by_protocol = {d["label"]: sum(d["data"]) for d in chart_data(the_page, "chart-tasks")}
    assert by_protocol == {"minions": 3, "remote_only": 1}
    spend = {d["label"]: d["data"] for d in chart_data(the_page, "chart-spend")}
    assert spend["spent"][-1] == pytest.approx(totals["cost_usd"])
    assert len(spend["spent"]) == 48
    snap(the_page, dashboard, "overview")

    # Accuracy: graded tasks per protocol, the published bench run, the frontier.
    show(the_page, "#/accuracy")
    rows = the_page.locator("#accuracy-tasks tbody tr")
    assert rows.count() == 2
    minions_row = the_page.locator("#accuracy-tasks tbody tr", has_text="minions").inner_text()
    assert "2" in minions_row and "100.0%" in minions_row
    assert (
        "0.0%" in the_page.locator("#accuracy-tasks tbody tr", has_text="remote_only").inner_text()
    )
    assert dashboard.bench_id in the_page.inner_text("#bench-runs")
    frontier = chart_data(the_page, "chart-frontier")
    bench = next(d for d in frontier if d["label"] == f"bench {dashboard.bench_id}")
    assert sorted(p["y"] for p in bench["data"]) == [0.3, 0.8, 0.9]
    # Each source's frontier: the bench run's is minions (cheapest, 0.8) then remote_only (0.9).
    line = next(d for d in frontier if d["label"] == f"bench {dashboard.bench_id} frontier")
    assert [(p["x"], p["y"]) for p in line["data"]] == [(0.001, 0.8), (0.01, 0.9)]
    snap(the_page, dashboard, "accuracy")

    # Information: the MI the gateway scored for the two minions tasks.
    info = dashboard.api("/v1/admin/summary/information")
    [row] = info["rows"]
    assert row["tasks"] == 2
    show(the_page, "#/information")
    cells = the_page.locator("#information-table tbody tr td").all_inner_texts()
    assert cells[:3] == ["minions", "smollm2-135m-instruct", "2"]
    assert cells[3] == f"{row['mi_bits']:.2f}" and cells[4] == f"{row['bits_per_token']:.4f}"
    bars = chart_data(the_page, "chart-mi-bits")
    assert bars[0]["data"] == [pytest.approx(row["mi_bits"])]
    points = chart_data(the_page, "chart-mi-accuracy")
    assert len(points[0]["data"]) == 2 and {p["y"] for p in points[0]["data"]} == {1.0}
    snap(the_page, dashboard, "information")

    # Tasks: the table, a filter, and a task's page.
    show(the_page, "#/tasks")
    ids = the_page.locator("#tasks-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.task)"
    )
    assert ids == [t["id"] for t in reversed(dashboard.tasks)]
    snap(the_page, dashboard, "tasks")
    the_page.select_option("#task-filters select[name=protocol]", "remote_only")
    the_page.click("#task-filters button[type=submit]")
    the_page.wait_for_selector(
        '#view[data-ready="true"][data-route="#/tasks?protocol=remote_only"]'
    )
    assert the_page.locator("#tasks-table tbody tr").count() == 1
    first = dashboard.tasks[0]
    show(the_page, f"#/task/{first['id']}")
    assert the_page.inner_text("#task-answer") == "4817"
    assert the_page.inner_text("#task-status") == "succeeded"
    remote_calls = first["result"]["usage"]["remote_calls"]
    assert the_page.locator("#remote-calls tbody tr").count() == len(remote_calls)
    assert the_page.locator("details.round").count() == len(first["result"]["rounds"])
    assert metric(the_page, "jobs-kept") == str(first["result"]["rounds"][0]["jobs"]["kept"])
    assert metric(the_page, "mi") == f"{first['mi']['mi_bits']:.2f} bits"
    assert "4817." in the_page.inner_text(".compressions")
    crossed = first["result"]["rounds"][0]["crossed"]
    assert crossed and the_page.locator(".crossed tbody tr").count() == len(crossed)
    assert crossed[0]["text"] in the_page.inner_text(".crossed")
    snap(the_page, dashboard, "task")

    # Workers and queues: no pool (the local model runs in the gateway), the study consumer.
    show(the_page, "#/workers")
    assert metric(the_page, "tasks-waiting") == "0" and metric(the_page, "dead-letters") == "0"
    assert "No worker pool" in the_page.inner_text("#view")
    snap(the_page, dashboard, "workers")

    # Keys: create one (its secret shown once), then revoke it.
    show(the_page, "#/keys")
    the_page.fill("#key-form input[name=name]", "browser-app")
    the_page.fill("#key-form input[name=budget_usd]", "2.5")
    the_page.click("#key-form button[type=submit]")
    secret = the_page.locator("#new-key-secret").inner_text()
    made = httpx.get(f"{dashboard.url}/v1/tasks", headers=auth(secret))
    assert made.status_code == 200  # the secret shown is a working key
    row_text = the_page.locator("#keys-table tbody tr", has_text="browser-app").inner_text()
    assert "$2.50" in row_text
    snap(the_page, dashboard, "keys")
    the_page.once("dialog", lambda dialog: dialog.accept())
    the_page.locator("#keys-table tbody tr", has_text="browser-app").locator("button").click()
    the_page.wait_for_function(
        "() => { const t = document.querySelector('#keys-table');"
        " return t && !t.innerText.includes('browser-app'); }"
    )
    assert httpx.get(f"{dashboard.url}/v1/tasks", headers=auth(secret)).status_code == 401

    # Studies: start one with a preset from the page; its run page shows metrics and figure.
    show(the_page, "#/studies")
    assert "No studies yet" in the_page.inner_text("#view")
    the_page.select_option("#study-form select[name=name]", "fake")
    the_page.select_option("#study-form select[name=preset]", "quick")
    the_page.click("#study-form button[type=submit]")
    the_page.wait_for_selector("#study-status:text('succeeded')", timeout=120_000)
    the_page.wait_for_selector('#view[data-ready="true"]')
    assert metric(the_page, "study-steps") == "3"
    the_page.wait_for_function("() => document.querySelector('.figures img')?.naturalWidth > 0")
    snap(the_page, dashboard, "study")
    show(the_page, "#/studies")
    assert "succeeded" in the_page.inner_text("#studies-table")

    # A phone-sized screen: nothing wider than the screen.
    the_page.set_viewport_size(PHONE)
    for route in ("#/overview", "#/tasks", f"#/task/{first['id']}"):
        show(the_page, route)
        width = the_page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], (route, width)
    snap(the_page, dashboard, "task-phone")
    show(the_page, "#/overview")
    snap(the_page, dashboard, "overview-phone")
    assert problems.seen == []


def test_a_task_page_follows_the_task_live_and_cancels(
    dashboard: Dashboard, page: tuple[Page, Problems]
) -> None:
    the_page, problems = page
    sign_in(the_page, dashboard.url)
    the_page.wait_for_selector('#view[data-ready="true"][data-view="overview"]')
    running = dashboard.submit(task("minions", 7001, "7001", "SLOW: what is the code?"))
    show(the_page, f"#/task/{running}")
    assert the_page.inner_text("#task-status") in ("queued", "running")
    # Events arrive while it runs: a remote call, with the spend so far.
    the_page.wait_for_selector('#task-events li[data-event="remote_call"]')
    assert the_page.inner_text("#live-calls") != "0"
    assert the_page.locator("#task-answer").count() == 0  # not finished yet
    snap(the_page, dashboard, "task-live")
    # At the end the page reloads itself with the answer.
    the_page.wait_for_selector("#task-answer", timeout=60_000)
    assert the_page.inner_text("#task-answer") == "7001"
    assert the_page.inner_text("#task-status") == "succeeded"

    hanging = dashboard.submit(task("minions", 7002, "7002", "HANG: what is the code?"))
    show(the_page, f"#/task/{hanging}")
    the_page.click("#cancel-task")
    the_page.wait_for_selector("#task-status:text('cancelled')", timeout=30_000)
    assert dashboard.api(f"/v1/tasks/{hanging}")["status"] == "cancelled"
    assert problems.seen == []


def test_a_wrong_key_is_refused(dashboard: Dashboard, browser: Browser) -> None:
    context = browser.new_context(viewport=DESKTOP)
    the_page = context.new_page()
    problems = Problems(the_page, allowed_status=frozenset({401, 403}))
    try:
        sign_in(the_page, dashboard.url, "mgw_not_a_key")
        the_page.wait_for_selector("#login-error:not([hidden])")
        assert the_page.inner_text("#login-error") == "That key was refused."
        assert the_page.is_hidden("#nav")
        assert the_page.evaluate("sessionStorage.length") == 0
        tenant = dashboard.client.post(
            "/v1/admin/keys", json={"name": "tenant"}, headers=ADMIN
        ).json()["key"]
        the_page.fill("#login-key", tenant)
        the_page.click("#login-form button[type=submit]")
        the_page.wait_for_selector("#login-error:text('not an admin key')")
        assert the_page.evaluate("sessionStorage.length") == 0
        snap(the_page, dashboard, "login-refused")
        assert problems.seen == []
    finally:
        context.close()
