"""The methods of issue 13 in a Celery worker process on PostgreSQL, Redis and S3: each job runs
to `succeeded`; a pool method's pool lands in S3 as the `synthetic` artifact, with the teacher's
logits."""

from __future__ import annotations

import io
import secrets
import subprocess
from pathlib import Path

import httpx
import numpy as np
import torch
from torch import nn

from service.blob_keys import synthetic_key
from service.blobstore import S3BlobStore
from service.settings import Settings
from tests.processes import (
    DFKD,
    start,
    start_api,
    stop,
    upload_batchnorm_teacher,
    wait_for_job,
    wait_until,
)

# a few rounds each: the method's mechanics on real parts (accuracy is tested in tests/api)
POOL = {"student_steps": 2, "warmup": 1, "pool_size": 40}
JOBS = {
    "deepinversion": {"synthesis_steps": 5, "competition": 1.0, **POOL},
    "cmi": {"synthesis_steps": 3, "bank_size": 64, **POOL},
    "fastdfkd": {"g_steps": 2, "meta": "reptile", **POOL},
    "dafl": {"generator_width": 0.125},
    "dfq": {"generator_width": 0.125, "student_steps": 2},
}


def test_the_2020s_methods_run_in_a_celery_worker_and_publish_their_pools_to_s3(
    postgres_url: str,
    redis_url: str,
    s3_endpoint: dict[str, str],
    tmp_path: Path,
    batchnorm_teacher: nn.Module,
    batchnorm_teacher_file: Path,
) -> None:
    env = {
        "DFKD_DATABASE_URL": postgres_url,
        "DFKD_BROKER_URL": redis_url,
        "DFKD_CELERY_QUEUE": f"dfkd-test-{secrets.token_hex(4)}",
        "DFKD_DATA_DIR": str(tmp_path / "data"),
        **s3_endpoint,
    }
    settings = Settings(
        **{key.removeprefix("DFKD_").lower(): value for key, value in s3_endpoint.items()}
    )
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
            with httpx.Client(base_url=base_url, timeout=30) as client:
                teacher_id = upload_batchnorm_teacher(client, batchnorm_teacher_file)
                jobs = {}
                for method, hyperparameters in JOBS.items():
                    job = client.post(
                        "/v1/jobs",
                        json={
                            "teacher_id": teacher_id,
                            "method": method,
                            "student": {"architecture": "lenet5_half"},
                            "iterations": 3,
                            "batch_size": 16,
                            "hyperparameters": hyperparameters,
                        },
                    )
                    assert job.status_code == 202, job.text
                    jobs[method] = job.json()["id"]
                for method, job_id in jobs.items():
                    final = wait_for_job(client, job_id, 300)
                    assert final["status"] == "succeeded", (method, final["error"])
                    if "pool_size" not in JOBS[method]:
                        continue
                    assert final["metrics"]["pool_size"] == 40
                    synthetic = client.get(f"/v1/jobs/{job_id}/synthetic")
                    assert synthetic.status_code == 200, synthetic.text
                    assert S3BlobStore(settings).exists(synthetic_key(job_id))  # the pool is on S3
                    arrays = np.load(io.BytesIO(synthetic.content))
                    images = torch.from_numpy(arrays["images"])
                    with torch.no_grad():
                        torch.testing.assert_close(
                            batchnorm_teacher(images),
                            torch.from_numpy(arrays["logits"]),
                            rtol=1e-4,
                            atol=1e-4,
                        )
        finally:
            stop(api)
    finally:
        stop(worker)
        print(worker_log.read_text()[-3000:])
