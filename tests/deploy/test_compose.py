"""docker-compose.yml: valid against the Compose Specification schema (vendored from the
docker-compose 1.29.2 package), and the service graph an operator relies on."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import jsonschema
import pytest
import yaml
from deploy.conftest import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    SCHEMA_FILE,
    env_example,
    interpolate,
    interpolated_variables,
)

from service.settings import Settings

SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|CREDENTIAL", re.IGNORECASE)
PASSWORD_IN_URL = re.compile(r"://[^/@\s]*:[^/@\s]+@")


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    values, _ = env_example()
    data = yaml.safe_load(interpolate(COMPOSE_FILE.read_text(), {**values, **(env or {})}))
    assert isinstance(data, dict)
    return data


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA_FILE.read_text())
    # The file names draft 2019-09 by a non-canonical URI (http, no "draft-" path); say it here.
    assert "2019-09" in schema["$schema"]
    validator = jsonschema.Draft201909Validator(
        schema, format_checker=jsonschema.Draft201909Validator.FORMAT_CHECKER
    )
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


@pytest.fixture
def compose() -> dict[str, Any]:
    return load_compose()


def test_compose_file_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    assert schema_errors(compose) == []


@pytest.mark.parametrize(
    "values", [{"MGW_GPU_WORKERS": "0", "COMPOSE_PROFILES": "cpu"}, {"MGW_GPU_WORKERS": "4"}]
)
def test_compose_file_stays_valid_with_other_settings(values: dict[str, str]) -> None:
    compose = load_compose(values)
    assert schema_errors(compose) == []
    assert compose["services"]["worker-gpu"]["deploy"]["replicas"] == int(values["MGW_GPU_WORKERS"])


def test_schema_validation_rejects_a_broken_service(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["gateway"]["healthcheck"]["retry"] = 3  # not a healthcheck field
    broken["services"]["redis"]["depends_on"] = {"gateway": {"condition": "when_ready"}}
    errors = schema_errors(broken)
    assert any("healthcheck" in e and "retry" in e for e in errors), errors
    assert any("when_ready" in e for e in errors), errors


def test_every_service_has_a_healthcheck_and_restarts(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "gateway", "worker-gpu", "worker-cpu"}
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
        assert service["restart"] == "unless-stopped", name


def test_redis_is_the_official_image_with_aof_on_a_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    image, tag = redis["image"].split(":")
    assert image == "redis" and re.fullmatch(r"\d+\.\d+\.\d+-\w+", tag), "pin the official image"
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert redis["volumes"] == ["redis-data:/data"] and "redis-data" in compose["volumes"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_gateway_waits_for_healthy_redis_and_probes_ready(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["gateway"]
    assert gateway["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert gateway["ports"] == ["127.0.0.1:8000:8000"]
    assert gateway["env_file"] == ".env"
    assert "/ready" in " ".join(gateway["healthcheck"]["test"])
    assert gateway["environment"]["MGW_LOCAL_POOL"] == "local"
    assert gateway["build"]["dockerfile"] == "docker/gateway.Dockerfile"


def test_workers_serve_the_gateways_pool_and_need_only_redis(compose: dict[str, Any]) -> None:
    pool = compose["services"]["gateway"]["environment"]["MGW_LOCAL_POOL"]
    for name in ("worker-gpu", "worker-cpu"):
        worker = compose["services"][name]
        assert worker["environment"]["MGW_WORKER_POOL"] == pool, name
        assert worker["depends_on"] == {"redis": {"condition": "service_healthy"}}, name
        assert worker["healthcheck"]["test"] == ["CMD", "minions-gw", "worker-check"], name
        assert worker["build"]["dockerfile"] == f"docker/{name}.Dockerfile", name


def test_gpu_worker_reserves_gpus_and_takes_model_and_parallelism_from_env() -> None:
    values = {"MGW_LOCAL_TENSOR_PARALLEL_SIZE": "2", "MGW_LOCAL_MODEL": "org/model"}
    compose = load_compose({**values, "MGW_GPU_WORKERS": "3"})
    worker = compose["services"]["worker-gpu"]
    assert "profiles" not in worker  # started by a plain `docker compose up`
    assert worker["deploy"]["replicas"] == 3
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": 2, "capabilities": ["gpu"]}
    assert str(worker["environment"]["MGW_LOCAL_TENSOR_PARALLEL_SIZE"]) == "2"
    assert worker["environment"]["MGW_LOCAL_MODEL"] == "org/model"
    assert compose["services"]["gateway"]["environment"]["MGW_LOCAL_MODEL"] == "org/model"


def test_cpu_worker_is_behind_the_cpu_profile(compose: dict[str, Any]) -> None:
    assert compose["services"]["worker-cpu"]["profiles"] == ["cpu"]
    assert all("profiles" not in s for n, s in compose["services"].items() if n != "worker-cpu")


def test_no_secret_is_written_inline() -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())  # as written, before interpolation
    for name, service in compose["services"].items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: use the mapping form"
        for key, value in environment.items():
            assert not SECRET_NAME.search(key), f"{name}: {key} belongs in .env"
            assert not PASSWORD_IN_URL.search(str(value)), f"{name}: {key} holds a password"
        if name != "redis":  # the only service that reads no setting
            assert service.get("env_file") == ".env", name


def test_env_example_documents_every_variable_and_holds_no_secret() -> None:
    values, commented = env_example()
    documented = set(values) | commented
    assert interpolated_variables(COMPOSE_FILE.read_text()) - documented == set()
    for name in ("OPENAI_API_KEY", "MGW_ADMIN_KEY"):
        assert name in commented and name not in values, f"{name}: document it, set no value"
    for name, value in values.items():
        assert not (SECRET_NAME.search(name) and value), f"{name} has a value in .env.example"
        assert not PASSWORD_IN_URL.search(value), name


def test_env_example_is_a_valid_settings_file() -> None:
    settings = Settings(_env_file=ENV_EXAMPLE)  # type: ignore[call-arg]
    assert settings.local_pool == "local" and settings.pool_wait_s == 600
    assert settings.redis_url == "redis://redis:6379/0" and settings.redis_sentinels is None
    assert not settings.remote_configured and settings.admin_key is None
