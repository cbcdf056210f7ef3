"""A job's limits, in-process on the embedded default: the soft time limit stops it at a
checkpoint with `time_limit`; a NaN/inf loss fails it with `diverged` and the step."""

from __future__ import annotations

import io
import re

import torch
from fastapi.testclient import TestClient
from safetensors.torch import save
from torch import nn

from service.models import Teacher
from service.settings import Settings
from worker.context import make_context
from worker.job import run_job

TINY = {
    "student": {"architecture": "lenet5_half"},
    "batch_size": 8,
    "sample_every": 0,
    "hyperparameters": {"generator_width": 8, "log_every": 1},
}


def test_the_soft_time_limit_stops_the_job_at_a_checkpoint_with_time_limit(
    client: TestClient, settings: Settings, teacher_id: str
) -> None:
    job = client.post(
        "/v1/jobs",
        json={"teacher_id": teacher_id, "iterations": 100_000, "checkpoint_every": 10, **TINY},
    ).json()
    limited = settings.model_copy(
        update={"job_soft_time_limit_seconds": 2.0, "keep_checkpoints": True}
    )
    run_job(job["id"], make_context(limited))  # returns by itself: the limit ends it

    final = client.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "failed", final
    assert final["error"]["code"] == "time_limit"
    message = final["error"]["message"]
    assert "DFKD_JOB_SOFT_TIME_LIMIT_SECONDS" in message and "checkpoint" in message
    step = int(re.search(r"checkpoint at step (\d+) is kept", message).group(1))
    assert step % 10 == 0 and step < 100_000
    path = settings.blob_dir / "jobs" / job["id"] / "checkpoint.pt"
    checkpoint = torch.load(io.BytesIO(path.read_bytes()), weights_only=True)
    assert checkpoint["step"] == step  # it stopped right after writing this one


def test_a_job_can_ask_for_a_shorter_limit_than_the_service_and_sees_it(
    client: TestClient, settings: Settings, teacher_id: str
) -> None:
    job = client.post(
        "/v1/jobs",
        json={
            "teacher_id": teacher_id,
            "iterations": 100_000,
            "checkpoint_every": 10,
            "time_limit_seconds": 2,
            **TINY,
        },
    ).json()
    assert job["time_limit_seconds"] == 2
    run_job(job["id"], make_context(settings))  # the service's own limit is a week

    final = client.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "failed" and final["error"]["code"] == "time_limit", final
    assert "time_limit_seconds" in final["error"]["message"]
    assert final["progress"]["iteration"] < 100_000


def test_a_longer_limit_than_the_service_allows_is_capped(
    client: TestClient, settings: Settings, teacher_id: str
) -> None:
    body = {"teacher_id": teacher_id, "iterations": 10, "time_limit_seconds": 1e9, **TINY}
    job = client.post("/v1/jobs", json=body).json()
    assert job["time_limit_seconds"] == settings.job_soft_time_limit_seconds
    refused = client.post("/v1/jobs", json={**body, "time_limit_seconds": 0})
    assert refused.status_code == 422


def test_an_infinite_loss_fails_the_job_as_diverged_with_the_step(
    client: TestClient, settings: Settings, teacher_id: str, mnist_teacher: nn.Module
) -> None:
    job = client.post("/v1/jobs", json={"teacher_id": teacher_id, "iterations": 50, **TINY}).json()
    # weights that are finite (every check passes them) but whose logits overflow to inf, so
    # the softmax and the KL become NaN; written over the stored teacher after its upload
    broken = {name: tensor.clone() for name, tensor in mnist_teacher.state_dict().items()}
    last = [name for name in broken if name.endswith("weight")][-1]
    broken[last].fill_(3e38)
    context = make_context(settings)
    with context.sessions() as session:
        blob_key = session.get(Teacher, teacher_id).blob_key
    context.blobs.put_bytes(blob_key, save(broken))
    run_job(job["id"], context)

    final = client.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "failed", final
    assert final["error"]["code"] == "diverged"
    assert re.search(r"became (nan|inf|-inf) at step 1;", final["error"]["message"]), final
