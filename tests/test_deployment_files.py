"""Static checks of docker-compose.yml and Dockerfile.gpu (Docker itself is not needed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DFKD_SERVICES = ("api", "worker", "migrate")
ALL_SERVICES = ("postgres", "redis", "minio", *DFKD_SERVICES)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def dockerfile() -> list[str]:
    """Dockerfile instructions, with backslash continuations joined and comments dropped."""
    text = (ROOT / "Dockerfile.gpu").read_text().replace("\\\n", " ")
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def as_list(value: str | list[str]) -> list[str]:
    return value.split() if isinstance(value, str) else [str(part) for part in value]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def test_all_services_exist(services: dict[str, Any]) -> None:
    missing = sorted(set(ALL_SERVICES) - set(services))
    assert not missing, f"docker-compose.yml lacks services: {missing}"


@pytest.mark.parametrize(
    ("name", "subcommand"), [("api", "serve"), ("worker", "worker"), ("migrate", "migrate")]
)
def test_dfkd_commands(services: dict[str, Any], name: str, subcommand: str) -> None:
    command = as_list(services[name].get("command", []))
    assert command[:2] == ["dfkd", subcommand], (
        f"{name} should run `dfkd {subcommand}`, got {command}"
    )


def test_dfkd_services_share_one_image(services: dict[str, Any]) -> None:
    for name in DFKD_SERVICES:
        service = services[name]
        assert service.get("image") == "dfkd:latest", f"{name} should be tagged dfkd:latest"
        build = service.get("build") or {}
        assert build.get("dockerfile") == "Dockerfile.gpu", f"{name} should build Dockerfile.gpu"


def test_api_listens_on_8000_with_healthcheck(services: dict[str, Any]) -> None:
    api = services["api"]
    command = as_list(api["command"])
    assert command[command.index("--port") + 1] == "8000", "api should serve on port 8000"
    assert "0.0.0.0" in command, "api must bind 0.0.0.0 to be reachable from outside the container"
    assert "8000:8000" in [str(port) for port in api.get("ports", [])], "api must publish 8000:8000"
    probe = " ".join(as_list(api.get("healthcheck", {}).get("test", [])))
    assert "localhost:8000/healthz" in probe, f"api healthcheck should hit /healthz, got {probe!r}"


@pytest.mark.parametrize(
    ("name", "probe"),
    [("postgres", "pg_isready"), ("redis", "redis-cli ping"), ("minio", "ready local")],
)
def test_backing_services_have_healthchecks(
    services: dict[str, Any], name: str, probe: str
) -> None:
    test = " ".join(as_list(services[name].get("healthcheck", {}).get("test", [])))
    assert probe in test, f"{name} healthcheck should use {probe!r}, got {test!r}"


def test_worker_reserves_an_nvidia_gpu(services: dict[str, Any]) -> None:
    worker = services["worker"]
    devices = (
        worker.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    )
    assert any(
        device.get("driver") == "nvidia" and "gpu" in device.get("capabilities", [])
        for device in devices
    ), f"worker needs an nvidia GPU reservation, got {devices}"
    env = environment(worker)
    assert env.get("DFKD_DEVICE", "").startswith("cuda"), "worker should set DFKD_DEVICE=cuda"
    assert env.get("CUDA_VISIBLE_DEVICES") == "0", "worker should set CUDA_VISIBLE_DEVICES=0"


@pytest.mark.parametrize("name", ["api", "worker"])
def test_migrate_runs_first(services: dict[str, Any], name: str) -> None:
    condition = services[name].get("depends_on", {}).get("migrate", {}).get("condition")
    assert condition == "service_completed_successfully", (
        f"{name} should wait for migrate to complete successfully, got {condition!r}"
    )
    assert services["migrate"].get("restart") == "no", "migrate is one-shot: restart must be 'no'"


@pytest.mark.parametrize("name", DFKD_SERVICES)
def test_dfkd_variables_are_settings_fields(services: dict[str, Any], name: str) -> None:
    known = {f"DFKD_{field.upper()}" for field in Settings.model_fields}
    variables = {key for key in environment(services[name]) if key.startswith("DFKD_")}
    assert variables, f"{name} sets no DFKD_* variables"
    unknown = sorted(variables - known)
    assert not unknown, f"{name} sets variables Settings does not read: {unknown}"


@pytest.mark.parametrize("name", DFKD_SERVICES)
def test_dfkd_variables_point_at_compose_services(services: dict[str, Any], name: str) -> None:
    env = environment(services[name])
    database = urlsplit(env["DFKD_DATABASE_URL"])
    assert (database.hostname, database.port) == ("postgres", 5432), (
        f"DFKD_DATABASE_URL should reach postgres:5432, got {database.netloc}"
    )
    postgres = environment(services["postgres"])
    assert (database.username, database.password, database.path.lstrip("/")) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    ), "DFKD_DATABASE_URL credentials/database must match the postgres service"

    broker = urlsplit(env["DFKD_BROKER_URL"])
    assert (broker.scheme, broker.hostname, broker.port) == ("redis", "redis", 6379), (
        f"DFKD_BROKER_URL should reach redis:6379, got {env['DFKD_BROKER_URL']}"
    )

    assert env["DFKD_S3_ENDPOINT"] == "minio:9000", "DFKD_S3_ENDPOINT should be minio:9000"
    assert "9000:9000" in [str(port) for port in services["minio"].get("ports", [])]
    minio = environment(services["minio"])
    assert env["DFKD_S3_ACCESS_KEY"] == minio["MINIO_ROOT_USER"], "S3 access key != MinIO user"
    assert env["DFKD_S3_SECRET_KEY"] == minio["MINIO_ROOT_PASSWORD"], (
        "S3 secret key != MinIO password"
    )


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = {
        str(volume).split(":", 1)[0]
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
    }
    named = {source for source in used if not source.startswith((".", "/", "~"))}
    assert named, "no service uses a named volume"
    undeclared = sorted(named - declared)
    assert not undeclared, f"named volumes used but not declared: {undeclared}"


def test_dockerfile_uses_cuda_base(dockerfile: list[str]) -> None:
    bases = [line.split()[1] for line in dockerfile if line.upper().startswith("FROM ")]
    assert bases and bases[0].startswith("nvidia/cuda:"), f"expected FROM nvidia/cuda, got {bases}"


def test_dockerfile_installs_the_pinned_torch_pair(dockerfile: list[str]) -> None:
    """The image installs the torch / torchvision pair pyproject.toml pins (PyPI's, CUDA inside):
    a torchvision beside another torch build fails at import."""
    pins = re.findall(r'"(torch(?:vision)?==[\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert len(set(pins)) == 2, f"pyproject.toml should pin torch and torchvision: {pins}"
    installs = [line for line in dockerfile if "pip install" in line and "torch==" in line]
    assert installs, "Dockerfile.gpu should pip install torch"
    assert all(pin in installs[0].split() for pin in pins), (installs, pins)
    assert "--index-url" not in installs[0], "PyPI's pair, not another index's build"


def test_dockerfile_runs_dfkd(dockerfile: list[str]) -> None:
    starts = [line for line in dockerfile if line.upper().startswith(("CMD ", "ENTRYPOINT "))]
    assert starts, "Dockerfile.gpu has no CMD or ENTRYPOINT"
    assert re.search(r'^\w+\s+(\[\s*)?"?dfkd"?', starts[-1]), f"should run dfkd: {starts[-1]}"
