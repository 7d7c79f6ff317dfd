"""``minions-gw keys`` and ``minions-gw serve`` run as a user runs them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

CLI = [sys.executable, "-m", "cli"]


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MGW_")}
    env |= {"MGW_DATA_DIR": str(tmp_path / "data"), **extra}
    return env


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


@pytest.mark.slow
def test_keys_create_list_revoke(tmp_path: Path) -> None:
    # The embedded Redis: each command starts it, and the data outlives it.
    env = env_for(tmp_path)
    created = run_cli("keys", "create", "--name", "ci", "--budget-usd", "2.5", env=env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("mgw_")
    key_id = token.split("_")[1]
    listed = run_cli("keys", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert key_id in listed.stdout and "ci" in listed.stdout and "2.5000" in listed.stdout
    assert token not in listed.stdout
    revoked = run_cli("keys", "revoke", key_id, env=env)
    assert revoked.returncode == 0 and key_id not in run_cli("keys", "list", env=env).stdout
    missing = run_cli("keys", "revoke", key_id, env=env)
    assert missing.returncode != 0 and "no key" in missing.stderr


@pytest.mark.slow
def test_keys_update_changes_a_keys_privacy_default(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    created = run_cli("keys", "create", "--name", "clinic", env=env)
    assert created.returncode == 0, created.stderr
    key_id = created.stdout.strip().splitlines()[-1].split("_")[1]
    updated = run_cli("keys", "update", key_id, "--privacy", "pseudonymize", env=env)
    assert updated.returncode == 0, updated.stderr
    assert f"key {key_id}: privacy pseudonymize" in updated.stdout
    assert (
        f"key {key_id}: privacy pseudonymize by default" in run_cli("keys", "list", env=env).stdout
    )
    back = run_cli("keys", "update", key_id, "--privacy", "default", env=env)
    assert back.returncode == 0 and "the gateway default" in back.stdout
    assert "pseudonymize" not in run_cli("keys", "list", env=env).stdout
    bad = run_cli("keys", "update", key_id, "--privacy", "maybe", env=env)
    assert bad.returncode != 0 and "--privacy" in bad.stderr
    missing = run_cli("keys", "update", "nosuchkey", "--privacy", "off", env=env)
    assert missing.returncode != 0 and "no key" in missing.stderr


def test_a_weak_admin_key_is_refused(tmp_path: Path) -> None:
    result = run_cli("keys", "list", env=env_for(tmp_path, MGW_ADMIN_KEY="changeme"))
    assert result.returncode != 0 and "admin_key" in result.stderr
    assert "changeme" not in result.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "serve", "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def wait_healthy(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail("the server did not become ready")


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    return output


@pytest.mark.slow
def test_serve_prints_the_bootstrap_key_once(tmp_path: Path) -> None:
    # An OpenAI-compatible local engine is only contacted on use: the server starts in seconds.
    env = env_for(tmp_path, MGW_LOCAL_ENGINE="openai", MGW_LOCAL_BASE_URL="http://127.0.0.1:9/v1")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(env, port)
    try:
        wait_healthy(url, server)
        assert httpx.get(f"{url}/v1/models", timeout=5).status_code == 401
    finally:
        first = stop(server)
    lines = first.splitlines()
    marker = next(i for i, line in enumerate(lines) if "bootstrap admin key" in line)
    token = lines[marker + 1].strip()
    assert token.startswith("mgw_")
    server = start_server(env, port)
    try:
        wait_healthy(url, server)
        models = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {token}"})
        assert models.status_code == 200 and models.json()["data"][0]["id"] == "minions"
    finally:
        second = stop(server)
    assert "bootstrap admin key" not in second and token not in second
