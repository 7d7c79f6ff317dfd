"""``/v1/studies`` (sidecar studies) and ``/v1/analysis/mi``, over test-only studies
(``support.fake_study``, ``support.broken_study``) and the scripted engine, so every test runs in
seconds. Studies run for real: on the study stream, in a niced child process, run by the
gateway's own consumer (no local pool) or by a ``minions-gw worker`` process."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from gateway_helpers import ADMIN_KEY, Gateway, auth
from support.fake_study import tiny_png
from support.openai_server import FaultPlan, build_app, serve_in_thread
from support.paths import REPO_ROOT
from support.scripted_engine import ScriptedEngine

from analysis.scoring_template import ScoringTemplate
from workers.studies.store import StudyStore

# The test-only studies, registered the way an operator registers their own (settings).
EXTRA_STUDIES = {"fake": "support.fake_study", "broken": "support.broken_study"}


@pytest.fixture
async def gw(make_gateway: Callable[..., Any]) -> AsyncIterator[Gateway]:
    """The gateway with no local pool: it runs studies itself (one in-process consumer)."""
    async with make_gateway(extra_studies=EXTRA_STUDIES) as gateway:
        yield gateway


async def wait_for_study(gw: Gateway, study_id: str, limit_s: float = 20.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + limit_s
    while True:
        response = await gw.client.get(f"/v1/studies/{study_id}", headers=auth(ADMIN_KEY))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in ("succeeded", "failed"):
            return body
        assert asyncio.get_running_loop().time() < deadline, f"study still {body['status']}"
        await asyncio.sleep(0.05)


async def test_a_study_runs_in_a_child_process_and_serves_its_listed_figures(gw: Gateway) -> None:
    response = await gw.client.post(
        "/v1/studies/fake", json={"preset": "quick", "seed": 7}, headers=auth(ADMIN_KEY)
    )
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["status"] == "queued" and created["id"].startswith("study_")
    body = await wait_for_study(gw, created["id"])
    assert body["status"] == "succeeded", body
    assert body["name"] == "fake" and body["params"]["seed"] == 7
    assert body["progress"] == {"done": 3, "total": 3, "message": "stepping"}
    result = body["result"]
    assert result["metrics"]["steps"] == 3 and result["metrics"]["seed"] == 7
    assert result["metrics"]["threads"] == 1  # held to MGW_STUDY_THREADS while it ran
    assert result["metrics"]["niceness"] == 19  # the lowest CPU priority: LM work comes first
    assert result["figures"] == ["curve.png"]
    assert body["worker"].startswith("gateway-")  # the embedded default runs it in-process

    base = f"/v1/studies/{created['id']}/figures"
    figure = await gw.client.get(f"{base}/curve.png", headers=auth(ADMIN_KEY))
    assert figure.status_code == 200
    assert figure.headers["content-type"] == "image/png"
    assert figure.content == tiny_png()
    for name in (
        "secret.png",
        "result.json",
        "..%2Fresult.json",
        "..%2F..%2Fredis",
        "%2Fetc%2Fpasswd",
    ):
        refused = await gw.client.get(f"{base}/{name}", headers=auth(ADMIN_KEY))
        assert refused.status_code == 404, name
        assert refused.json()["error"]["type"] == "not_found"


async def test_a_failing_study_is_recorded_as_failed(gw: Gateway) -> None:
    response = await gw.client.post("/v1/studies/broken", headers=auth(ADMIN_KEY))
    assert response.status_code == 202
    body = await wait_for_study(gw, response.json()["id"])
    assert body["status"] == "failed"
    assert body["error"] == "RuntimeError: the fake study broke" and body["result"] is None


async def test_unknown_studies_and_bad_params_are_refused(gw: Gateway) -> None:
    response = await gw.client.post("/v1/studies/nope", headers=auth(ADMIN_KEY))
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["param"] == "name" and "nope" in error["message"]
    for body, param in (
        ({"preset": "huge"}, "preset"),
        ({"device": "tpu"}, "device"),
        ({"seed": -1}, "seed"),
        ({"steps": 9}, "steps"),
    ):
        response = await gw.client.post("/v1/studies/fake", json=body, headers=auth(ADMIN_KEY))
        assert response.status_code == 422, body
        assert response.json()["error"]["param"] == param
    for study_id in ("study_0000000000000000000000", "x", "study_..%2F..%2Fx"):
        response = await gw.client.get(f"/v1/studies/{study_id}", headers=auth(ADMIN_KEY))
        assert response.status_code == 404, study_id


async def wait_until_running(gw: Gateway, study_id: str, limit_s: float = 20.0) -> None:
    """Until the study's child process has reported progress."""
    deadline = asyncio.get_running_loop().time() + limit_s
    while True:
        response = await gw.client.get(f"/v1/studies/{study_id}", headers=auth(ADMIN_KEY))
        body = response.json()
        if body["status"] == "running" and body["progress"].get("done", 0) >= 1:
            return
        assert body["status"] in ("queued", "running"), body
        assert asyncio.get_running_loop().time() < deadline, f"study still {body['status']}"
        await asyncio.sleep(0.05)


def process_is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_a_study_running_at_shutdown_goes_back_to_the_queue(
    make_gateway: Callable[..., Any], tmp_path: Path
) -> None:
    async with make_gateway(extra_studies=EXTRA_STUDIES) as gw:
        created = await gw.client.post(
            "/v1/studies/fake", json={"preset": "full"}, headers=auth(ADMIN_KEY)
        )
        study_id = created.json()["id"]
        await wait_until_running(gw, study_id)
        pid = int((tmp_path / "data" / "studies" / study_id / "pid").read_text())
        started = asyncio.get_running_loop().time()
    assert asyncio.get_running_loop().time() - started < 8  # the child is terminated, not awaited
    assert process_is_gone(pid)
    studies = StudyStore(gw.store.redis)
    record = await studies.get(study_id)
    assert record is not None
    assert (record.status, record.started_at, record.worker) == ("queued", None, None)
    assert await studies.queued() == 1  # a new entry waits for the next consumer


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


async def test_a_worker_process_runs_a_study_queued_over_http(
    make_gateway: Callable[..., Any], redis_url: str, tmp_path: Path
) -> None:
    """With a local pool the gateway runs no study itself: ``minions-gw worker`` (real command,
    real ``openai`` adapter) takes it, and any gateway serves its result and figures."""
    env = {
        **os.environ,
        "MGW_REDIS_URL": redis_url,
        "MGW_DATA_DIR": str(tmp_path / "worker"),
        "MGW_EXTRA_STUDIES": json.dumps(EXTRA_STUDIES),
        "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{REPO_ROOT / 'tests'}",
    }
    with serve_in_thread(build_app(ScriptedEngine(default="ok"), FaultPlan())) as url:
        command = [sys.executable, "-m", "cli", "--log-level", "INFO", "worker"]
        command += ["--engine", "openai", "--model", "m", "--base-url", f"{url}/v1"]
        command += ["--name", "study-worker"]
        process = start(command, env)
        try:
            async with make_gateway(extra_studies=EXTRA_STUDIES, local_pool="default") as gw:
                assert gw.app.state.services.studies.consumer is None
                created = await gw.client.post(
                    "/v1/studies/fake", json={"seed": 3}, headers=auth(ADMIN_KEY)
                )
                study_id = created.json()["id"]
                body = await wait_for_study(gw, study_id, limit_s=40)
                assert body["status"] == "succeeded", body
                assert body["worker"] == "study-worker"
                assert body["result"]["metrics"] == {
                    "steps": 3,
                    "seed": 3,
                    "threads": 1,
                    "niceness": 19,
                }
                figure = await gw.client.get(
                    f"/v1/studies/{study_id}/figures/curve.png", headers=auth(ADMIN_KEY)
                )
                assert figure.status_code == 200 and figure.content == tiny_png()
                # result.json and the figures stay on the worker's disk too
                assert (tmp_path / "worker" / "studies" / study_id / "result.json").is_file()
        finally:
            process.send_signal(signal.SIGTERM)
            output, _ = await asyncio.to_thread(process.communicate, timeout=30)
    assert process.returncode == 0, output.decode()
    assert b"pool 'default', batch 64, studies" in output


async def test_studies_need_an_admin_key(gw: Gateway) -> None:
    key = await gw.new_key()
    created = await gw.client.post("/v1/studies/fake", headers=auth(ADMIN_KEY))
    study_id = created.json()["id"]
    for method, path in (
        ("POST", "/v1/studies/fake"),
        ("GET", f"/v1/studies/{study_id}"),
        ("GET", f"/v1/studies/{study_id}/figures/curve.png"),
    ):
        response = await gw.client.request(method, path, headers=auth(key))
        assert response.status_code == 403, path
    await wait_for_study(gw, study_id)


async def test_the_auth_walk_covers_the_new_routes(gw: Gateway) -> None:
    paths = {route.path for route in gw.app.routes if isinstance(route, APIRoute)}
    new = {
        "/v1/studies/{name}",
        "/v1/studies/{study_id}",
        "/v1/studies/{study_id}/figures/{file}",
        "/v1/analysis/mi",
    }
    assert new <= paths
    for path in new:
        concrete = path.replace("{name}", "fake").replace("{study_id}", "x").replace("{file}", "x")
        for method in ("GET", "POST"):
            response = await gw.client.request(method, concrete)
            assert response.status_code in (401, 405), (method, path)
            if response.status_code == 401:
                assert response.json()["error"]["type"] == "unauthorized"


# -- /v1/analysis/mi -------------------------------------------------------------------------


def by_hand(own: float, other: float) -> float:
    """One term with N = 2: log p_own - log((p_own + p_other) / 2)."""
    return own - math.log((math.exp(own) + math.exp(other)) / 2)


async def test_mi_over_two_contexts_matches_the_hand_computation(gw: Gateway) -> None:
    # The scripted engine scores a word -0.1 when the prefix holds it, else -5.0; the plain
    # template's own words (Read, the, document, ...) appear in neither compression.
    assert not {"alpha", "beta", "gamma"} & set(ScoringTemplate.plain().render("", "").split())
    key = await gw.new_key()
    body = {
        "contexts": ["alpha beta", "gamma delta"],
        "queries": "what?",
        "compressions": [{"context": 0, "text": "alpha beta"}, {"context": 1, "text": "gamma"}],
    }
    response = await gw.client.post("/v1/analysis/mi", json=body, headers=auth(key))
    assert response.status_code == 200, response.text
    estimate = response.json()
    term0 = by_hand(-0.2, -10.0)  # "alpha beta": both words under context 0, neither under 1
    term1 = by_hand(-0.1, -5.0)  # "gamma": under context 1 only
    mi_nats = (term0 + term1) / 2
    assert estimate["n_contexts"] == 2 and estimate["n_compressions"] == 2
    assert estimate["scorer_model"] == "smollm2-135m-instruct"
    assert estimate["mi_nats"] == pytest.approx(mi_nats, abs=1e-9)
    assert estimate["mi_bits"] == pytest.approx(mi_nats / math.log(2), abs=1e-9)
    assert estimate["bits_per_token"] == pytest.approx(mi_nats / math.log(2) / 1.5, abs=1e-9)
    terms = estimate["terms"]
    assert [t["tokens"] for t in terms] == [2, 1]
    assert terms[0]["log_p_own"] == pytest.approx(-0.2) and terms[1]["log_p_own"] == -0.1
    assert terms[0]["nats"] == pytest.approx(term0, abs=1e-9)
    assert terms[1]["nats"] == pytest.approx(term1, abs=1e-9)
    assert all(t["nats"] <= math.log(2) for t in terms)


async def test_mi_refuses_bad_and_oversized_requests(gw: Gateway) -> None:
    key = await gw.new_key()
    good = {
        "contexts": ["a b", "c d"],
        "queries": "q",
        "compressions": [{"context": 0, "text": "a"}],
    }
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({**good, "contexts": ["a b"]}, 422, "contexts"),
        ({**good, "contexts": ["a b"] * 65}, 422, "contexts"),
        ({**good, "contexts": ["a b", "a b"]}, 422, "contexts"),
        ({**good, "compressions": []}, 422, "compressions"),
        ({**good, "compressions": [{"context": 5, "text": "a"}]}, 422, "compressions"),
        ({**good, "queries": ["q"]}, 422, "queries"),
        ({**good, "contexts": ["x" * 200_001, "c"]}, 413, "contexts"),
        ({**good, "compressions": [{"context": 0, "text": "z" * 16_001}]}, 413, "compressions"),
        (
            {
                **good,
                "contexts": [f"c{i}" for i in range(64)],
                "compressions": [{"context": 0, "text": "a"}] * 65,
            },
            413,
            "compressions",
        ),
    ]
    for body, status, param in cases:
        response = await gw.client.post("/v1/analysis/mi", json=body, headers=auth(key))
        assert response.status_code == status, (param, response.text[:200])
        assert response.json()["error"]["param"].startswith(param), response.text[:200]
