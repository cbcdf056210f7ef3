"""Starting and stopping the service's real processes from tests, bounded in time."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
DFKD = str(Path(sys.executable).with_name("dfkd"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(
        [DFKD, *args], env={**os.environ, **env}, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO
    )


def stop(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def embedded_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """Environment of `dfkd serve` on the embedded default (SQLite, local folder, runner processes)
    under `data_dir`, whatever the calling shell exports, plus `settings`."""
    return {
        "DFKD_DATA_DIR": str(data_dir),
        "DFKD_BROKER_URL": "",
        "DFKD_S3_ENDPOINT": "",
        "DFKD_DATABASE_URL": "",
        **settings,
    }


def start_api(
    env: dict[str, str], log: Path, timeout: float = 60
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = start(["serve", "--port", str(port), "--log-level", "warning"], env, log)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"dfkd serve exited early:\n{log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, timeout, "the API to answer /healthz")
    return process, base


def wait_for_job(client: httpx.Client, job_id: str, timeout: float) -> dict:
    """Poll until the job ends; returns its final representation."""
    final: dict = {}

    def ended() -> bool:
        nonlocal final
        final = client.get(f"/v1/jobs/{job_id}").json()
        return final["status"] in {"succeeded", "failed", "cancelled"}

    wait_until(ended, timeout, f"job {job_id} to finish", interval=1.0)
    return final


def create_api_key(env: dict[str, str], tenant: str) -> str:
    """`dfkd keys create` for `tenant` in the deployment `env` describes; returns the key."""
    result = subprocess.run(
        [DFKD, "keys", "create", "--tenant", tenant, "--name", "tests"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)["key"]


def upload_lenet_teacher(client: httpx.Client, teacher_file: Path) -> str:
    """POSTs the test suite's LeNet-5 teacher (MNIST normalisation); returns its id."""
    with teacher_file.open("rb") as handle:
        response = client.post(
            "/v1/teachers",
            files={"file": ("lenet5.safetensors", handle)},
            data={"architecture": "lenet5", "input_mean": "[0.1307]", "input_std": "[0.3081]"},
        )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def upload_batchnorm_teacher(client: httpx.Client, teacher_file: Path) -> str:
    """POSTs the test suite's BatchNorm teacher (`lenet5_bn`, MNIST normalisation); returns its
    id. Takes an httpx client or FastAPI's TestClient."""
    with teacher_file.open("rb") as handle:
        response = client.post(
            "/v1/teachers",
            files={"file": ("lenet5_bn.safetensors", handle)},
            data={"architecture": "lenet5_bn", "input_mean": "[0.1307]", "input_std": "[0.3081]"},
        )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def upload_segmentation_teacher(client: httpx.Client, teacher_file: Path) -> str:
    """POSTs the test suite's segmentation teacher (`deeplabv3_resnet_mini`, width 8, 1 channel,
    64 px scenes, MNIST normalisation); returns its id. Takes an httpx client or a TestClient."""
    with teacher_file.open("rb") as handle:
        response = client.post(
            "/v1/teachers",
            files={"file": ("deeplabv3_resnet_mini.safetensors", handle)},
            data={
                "architecture": "deeplabv3_resnet_mini",
                "architecture_kwargs": '{"in_channels": 1, "width": 8}',
                "input_mean": "[0.1307]",
                "input_std": "[0.3081]",
            },
        )
    assert response.status_code == 201, response.text
    assert response.json()["task_type"] == "segmentation", response.json()
    return response.json()["id"]


def start_tiny_job(client: httpx.Client) -> str:
    """Uploads a LeNet-5 teacher with random weights and starts a 10-iteration job on it; returns
    the job's id. For tests where the job's outcome does not matter (it may stay queued)."""
    from tests.hostile_corpus import good_weights

    teacher = client.post(
        "/v1/teachers",
        files={"file": ("lenet5.safetensors", good_weights())},
        data={"architecture": "lenet5"},
    )
    assert teacher.status_code == 201, teacher.text
    job = client.post(
        "/v1/jobs",
        json={
            "teacher_id": teacher.json()["id"],
            "student": {"architecture": "lenet5_half"},
            "iterations": 10,
        },
    )
    assert job.status_code == 202, job.text
    return job.json()["id"]
