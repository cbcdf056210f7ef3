"""The job function itself, in-process on the embedded default: evaluation, few-shot, samples, failures."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from core.datasets import LabelledImages
from service.settings import Settings
from worker.context import make_context
from worker.job import run_job


def upload_digits(client: TestClient, data: LabelledImages) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, images=data.images.numpy(), labels=data.labels.numpy())
    response = client.post("/v1/datasets", files={"file": ("digits.npz", buffer.getvalue())})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_job_with_few_shot_and_evaluation_reports_accuracy_agreement_and_mte(
    client: TestClient,
    settings: Settings,
    teacher_id: str,
    digits: tuple[LabelledImages, LabelledImages],
) -> None:
    train, heldout = digits
    few_shot = upload_digits(client, LabelledImages(train.images[:300], train.labels[:300]))
    evaluation = upload_digits(client, LabelledImages(heldout.images[:300], heldout.labels[:300]))
    job = client.post(
        "/v1/jobs",
        json={
            "teacher_id": teacher_id,
            "student": {"architecture": "lenet5_half"},
            "iterations": 30,
            "batch_size": 64,
            "hyperparameters": {"generator_width": 16},
            "few_shot_dataset_id": few_shot,
            "few_shot_per_class": 10,
            "evaluation_dataset_id": evaluation,
            "mte_images": 20,
            "mte_steps": 10,
            "sample_every": 15,
        },
    ).json()
    run_job(job["id"], make_context(settings))

    final = client.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "succeeded", final["error"]
    report = client.get(final["links"]["report"]).json()
    assert report["images"] == 300
    assert 0.9 < report["teacher_accuracy"] <= 1.0
    assert report["student_accuracy"] > 0.5  # 30 data-free iterations + 10 real digits per class
    assert (
        0 < report["mte"]["mte"] < 1
        and report["mte"]["images"] == 20
        and report["mte"]["steps"] == 10
    )
    plot = client.get(f"/v1/jobs/{job['id']}/report/transition-curves.png")
    assert Image.open(io.BytesIO(plot.content)).format == "PNG"
    names = {
        point["name"]
        for point in client.get(f"/v1/jobs/{job['id']}/metrics", params={"limit": 10000}).json()[
            "items"
        ]
    }
    assert {"kl", "few_shot_kd", "few_shot_loss_student"} <= names
    assert [s["step"] for s in client.get(final["links"]["samples"]).json()["items"]] == [15, 30]


def test_second_delivery_of_a_finished_job_does_nothing(
    client: TestClient, settings: Settings, teacher_id: str
) -> None:
    job = client.post(
        "/v1/jobs",
        json={
            "teacher_id": teacher_id,
            "student": {"architecture": "lenet5_half"},
            "iterations": 3,
            "batch_size": 8,
            "hyperparameters": {"generator_width": 8},
        },
    ).json()
    context = make_context(settings)
    run_job(job["id"], context)
    first = client.get(f"/v1/jobs/{job['id']}").json()
    run_job(job["id"], context)
    second = client.get(f"/v1/jobs/{job['id']}").json()
    assert first["status"] == second["status"] == "succeeded"
    assert second["attempts"] == 1 and second["finished_at"] == first["finished_at"]
    scripted = client.get(f"/v1/jobs/{job['id']}/student", params={"format": "torchscript"})
    assert scripted.status_code == 200
    assert torch.jit.load(io.BytesIO(scripted.content))(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    assert (
        client.get(f"/v1/jobs/{job['id']}/student", params={"format": "pickle"}).status_code == 422
    )


def test_a_teacher_file_that_vanished_fails_the_job_with_a_clear_error(
    client: TestClient, settings: Settings, teacher_id: str
) -> None:
    for path in (settings.blob_dir / "teachers").rglob("*.safetensors"):
        path.write_bytes(b"corrupted")
    job = client.post(
        "/v1/jobs",
        json={
            "teacher_id": teacher_id,
            "student": {"architecture": "lenet5_half"},
            "iterations": 3,
        },
    ).json()
    run_job(job["id"], make_context(settings))
    final = client.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "failed"
    assert final["error"]["code"] == "teacher_invalid"
    assert "safetensors" in final["error"]["message"]


@pytest.fixture(autouse=True)
def _quiet_threads() -> None:
    import torch

    torch.set_num_threads(2)


@pytest.mark.parametrize("keep_checkpoints", [False, True])
def test_cancelling_a_running_job_stops_it_and_drops_its_checkpoint_unless_kept(
    client: TestClient, settings: Settings, teacher_id: str, keep_checkpoints: bool
) -> None:
    settings = settings.model_copy(update={"keep_checkpoints": keep_checkpoints})
    job = client.post(
        "/v1/jobs",
        json={
            "teacher_id": teacher_id,
            "student": {"architecture": "lenet5_half"},
            "iterations": 100_000,
            "batch_size": 8,
            "checkpoint_every": 5,
            "hyperparameters": {"generator_width": 8, "student_steps": 1, "log_every": 1},
        },
    ).json()
    runner = threading.Thread(target=run_job, args=(job["id"], make_context(settings)))
    runner.start()
    deadline = time.monotonic() + 120
    while client.get(f"/v1/jobs/{job['id']}").json()["progress"]["iteration"] < 10:
        assert time.monotonic() < deadline, "the job never got going"
        time.sleep(0.2)
    assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["cancel_requested"] is True
    runner.join(60)
    final = client.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "cancelled" and final["progress"]["iteration"] < 100_000
    folder = settings.blob_dir / "jobs" / job["id"]
    assert (folder / "checkpoint.pt").is_file() is keep_checkpoints
    assert client.get(f"/v1/jobs/{job['id']}/student").status_code == 409
