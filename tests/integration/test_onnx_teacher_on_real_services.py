"""An ONNX teacher on the production shape: uploaded to `dfkd serve` on PostgreSQL and S3,
converted and distilled by a Celery worker process on Redis."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import httpx

from tests import onnx_graphs
from tests.processes import DFKD, start, start_api, stop, wait_for_job, wait_until


def test_an_onnx_teacher_is_distilled_by_a_celery_worker(
    postgres_url: str, redis_url: str, s3_endpoint: dict[str, str], tmp_path: Path
) -> None:
    env = {
        "DFKD_DATABASE_URL": postgres_url,
        "DFKD_BROKER_URL": redis_url,
        "DFKD_CELERY_QUEUE": f"dfkd-test-{secrets.token_hex(4)}",
        "DFKD_DATA_DIR": str(tmp_path / "data"),
        **s3_endpoint,
    }
    migrate = subprocess.run(
        [DFKD, "migrate"], env=env | {"PATH": ""}, capture_output=True, text=True, timeout=60
    )
    assert migrate.returncode == 0, migrate.stderr
    worker_log = tmp_path / "worker.log"
    worker = start(["worker", "--hostname", f"test-{secrets.token_hex(3)}@%h"], env, worker_log)
    try:
        wait_until(lambda: "ready" in worker_log.read_text(), 60, "the Celery worker to be ready")
        api, base_url = start_api(env, tmp_path / "api.log")
        try:
            with httpx.Client(base_url=base_url, timeout=60) as client:
                teacher = client.post(
                    "/v1/teachers",
                    files={"file": ("teacher.onnx", onnx_graphs.valid())},
                    data={"format": "onnx"},
                )
                assert teacher.status_code == 201, teacher.text
                assert teacher.json()["input_shape"] == [1, 8, 8]
                job = client.post(
                    "/v1/jobs",
                    json={
                        "teacher_id": teacher.json()["id"],
                        "student": {"architecture": "hinton800"},
                        "iterations": 3,
                        "batch_size": 8,
                        "hyperparameters": {"generator_width": 16},
                    },
                )
                assert job.status_code == 202, job.text
                final = wait_for_job(client, job.json()["id"], 300)
                config = client.get(f"/v1/jobs/{final['id']}/student/config")
        finally:
            stop(api)
    finally:
        stop(worker)
        print(worker_log.read_text()[-3000:])
    assert final["status"] == "succeeded", final
    assert config.json()["teacher_sha256"] == teacher.json()["sha256"]
    assert config.json()["pretrained_cfg"]["input_size"] == [1, 8, 8]
