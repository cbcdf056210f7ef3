"""DELETE on the production shape: PostgreSQL, a Celery worker process on Redis, S3 over HTTP
(moto). After each deletion a listing of the whole bucket, made with the minio client itself
(not through the store under test), shows no key of the object left; a finished job's
checkpoint is gone as it ends; a running job is cancelled and deleted once it has stopped."""

from __future__ import annotations

import io
import os
import secrets
import subprocess
from pathlib import Path

import httpx
import numpy as np
from minio import Minio

from core.datasets import LabelledImages
from tests.processes import (
    DFKD,
    start,
    start_api,
    stop,
    upload_lenet_teacher,
    wait_for_job,
    wait_until,
)

SMALL = {
    "student": {"architecture": "lenet5_half"},
    "batch_size": 16,
    "hyperparameters": {"generator_width": 8, "log_every": 1},
}


def bucket_keys(s3: dict[str, str]) -> list[str]:
    client = Minio(
        s3["DFKD_S3_ENDPOINT"],
        access_key=s3["DFKD_S3_ACCESS_KEY"],
        secret_key=s3["DFKD_S3_SECRET_KEY"],
        secure=False,
        region=s3["DFKD_S3_REGION"],
    )
    objects = client.list_objects(s3["DFKD_S3_BUCKET"], recursive=True)
    return sorted(item.object_name for item in objects)


def keys_of(s3: dict[str, str], object_id: str) -> list[str]:
    return [key for key in bucket_keys(s3) if object_id in key]


def upload_dataset(client: httpx.Client, data: LabelledImages) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, images=data.images[:50].numpy(), labels=data.labels[:50].numpy())
    response = client.post("/v1/datasets", files={"file": ("held.npz", buffer.getvalue())})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_delete_leaves_no_key_on_s3_and_waits_for_a_running_job(
    postgres_url: str,
    redis_url: str,
    s3_endpoint: dict[str, str],
    tmp_path: Path,
    teacher_file: Path,
    digits: tuple[LabelledImages, LabelledImages],
) -> None:
    env = {
        "DFKD_DATABASE_URL": postgres_url,
        "DFKD_BROKER_URL": redis_url,
        "DFKD_CELERY_QUEUE": f"dfkd-test-{secrets.token_hex(4)}",
        "DFKD_DATA_DIR": str(tmp_path / "data"),
        "DFKD_TORCH_THREADS": "1",
        **s3_endpoint,
    }
    migrate = subprocess.run(  # the caller's environment too: its PYTHONPATH picks the code
        [DFKD, "migrate"], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert migrate.returncode == 0, migrate.stderr
    worker_log = tmp_path / "worker.log"
    worker = start(["worker", "--hostname", f"test-{secrets.token_hex(3)}@%h"], env, worker_log)
    try:
        wait_until(lambda: "ready" in worker_log.read_text(), 60, "the Celery worker to be ready")
        api, base_url = start_api(env, tmp_path / "api.log")
        try:
            with httpx.Client(base_url=base_url, timeout=30) as client:
                run_the_deletions(client, s3_endpoint, digits[1], teacher_file)
        finally:
            stop(api)
    finally:
        stop(worker)
        print(worker_log.read_text()[-3000:])


def run_the_deletions(
    client: httpx.Client, s3: dict[str, str], heldout: LabelledImages, teacher_file: Path
) -> None:
    teacher_id = upload_lenet_teacher(client, teacher_file)
    kept_teacher = upload_lenet_teacher(client, teacher_file)
    dataset_id = upload_dataset(client, heldout)

    # a finished job: its checkpoint went as it ended, its student and samples stay
    done = client.post(
        "/v1/jobs",
        json={
            "teacher_id": teacher_id,
            "iterations": 20,
            "checkpoint_every": 10,
            "sample_every": 10,
            "evaluation_dataset_id": dataset_id,
            "mte_images": 5,
            "mte_steps": 5,
            **SMALL,
        },
    ).json()["id"]
    assert wait_for_job(client, done, 300)["status"] == "succeeded"
    finished_keys = keys_of(s3, done)
    assert f"jobs/{done}/student.safetensors" in finished_keys
    assert any("/samples/" in key for key in finished_keys)
    assert f"jobs/{done}/checkpoint.pt" not in finished_keys

    # a running job: 202, cancelled, deleted by its worker once it has stopped
    running = client.post(
        "/v1/jobs",
        json={"teacher_id": teacher_id, "iterations": 100_000, "checkpoint_every": 5, **SMALL},
    ).json()["id"]
    wait_until(
        lambda: client.get(f"/v1/jobs/{running}").json()["progress"]["iteration"] > 5,
        300,
        "the long job to run",
    )
    wait_until(lambda: bool(keys_of(s3, running)), 60, "the long job's checkpoint")
    pending = client.delete(f"/v1/jobs/{running}")
    assert pending.status_code == 202, pending.text
    assert pending.json()["state"] == "pending" and pending.json()["waiting_for"] == [running]
    wait_until(lambda: client.get(f"/v1/jobs/{running}").status_code == 404, 120, "the deletion")
    assert keys_of(s3, running) == []

    # a dataset a finished job used; then the teacher, whose finished job goes with it
    assert client.delete(f"/v1/datasets/{dataset_id}").status_code == 204
    assert keys_of(s3, dataset_id) == []
    assert client.delete(f"/v1/teachers/{teacher_id}").status_code == 204
    for object_id in (teacher_id, done, running, dataset_id):
        assert keys_of(s3, object_id) == [], object_id
    assert client.get(f"/v1/jobs/{done}").status_code == 404
    assert client.delete(f"/v1/teachers/{teacher_id}").status_code == 404
    # nothing else was touched
    assert keys_of(s3, kept_teacher) == [f"teachers/{kept_teacher}/weights.safetensors"]
    assert client.get(f"/v1/teachers/{kept_teacher}").status_code == 200

    deletions = client.get("/v1/deletions").json()["items"]
    assert [(d["kind"], d["object_id"], d["reason"], d["state"]) for d in deletions] == [
        ("job", done, "cascade", "deleted"),
        ("teacher", teacher_id, "request", "deleted"),
        ("dataset", dataset_id, "request", "deleted"),
        ("job", running, "request", "deleted"),
    ]
