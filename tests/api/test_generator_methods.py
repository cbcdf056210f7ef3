"""DAFL and DFQ over HTTP on the embedded default: a short job on the BatchNorm teacher to
`succeeded`, a student clearly above chance on the held-out digits, every loss term in the
metrics, sample grids; DFQ refused on a teacher without BatchNorm."""

from __future__ import annotations

from pathlib import Path

import torch
from fastapi.testclient import TestClient

from core.datasets import LabelledImages
from core.evaluation import accuracy
from core.models import build
from core.weights import load_weights, read_state_dict
from service.settings import Settings
from tests.processes import upload_batchnorm_teacher, upload_lenet_teacher
from worker.context import make_context
from worker.job import run_job


def run_to_success(
    client: TestClient, settings: Settings, teacher_id: str, method: str, **fields: object
) -> dict:
    job = client.post(
        "/v1/jobs",
        json={
            "teacher_id": teacher_id,
            "method": method,
            "student": {"architecture": "lenet5_half"},
            "seed": 0,
            "sample_every": 20,
            **fields,
        },
    )
    assert job.status_code == 202, job.text
    assert job.json()["hyperparameters"]["generator_width"] == 0.25  # the CPU worker's default
    run_job(job.json()["id"], make_context(settings))
    final = client.get(f"/v1/jobs/{job.json()['id']}").json()
    assert final["status"] == "succeeded", final["error"]
    assert final["progress"]["iteration"] == fields["iterations"]
    samples = client.get(f"/v1/jobs/{final['id']}/samples").json()
    assert [item["step"] for item in samples["items"]] == list(
        range(20, int(fields["iterations"]) + 1, 20)  # type: ignore[call-overload]
    )
    return final


def series(client: TestClient, job: dict, name: str) -> list[float]:
    points = client.get(f"/v1/jobs/{job['id']}/metrics", params={"name": name}).json()
    return [point["value"] for point in points["items"]]


def downloaded_student(client: TestClient, job: dict) -> torch.nn.Module:
    response = client.get(job["links"]["student"], params={"delivery": "stream"})
    assert response.status_code == 200
    return load_weights(build("lenet5_half"), read_state_dict(response.content))


def test_dafl_over_http_gives_a_student_well_above_chance(
    client: TestClient,
    settings: Settings,
    teacher_file: Path,
    digits: tuple[LabelledImages, LabelledImages],
) -> None:
    """On the LeNet-5 teacher: on the ResNet-8 BatchNorm teacher DAFL's generator collapses to
    a few classes and the student stays at chance in a few minutes (docs/methods.md, DAFL).
    Measured: 58% held out after 100 iterations of 128, 34% after 50; chance is 10%."""
    teacher_id = upload_lenet_teacher(client, teacher_file)
    job = run_to_success(
        client,
        settings,
        teacher_id,
        "dafl",
        iterations=100,
        batch_size=128,
        hyperparameters={"log_every": 10},
    )
    for term in ("loss_one_hot", "loss_activation", "loss_information_entropy", "loss_student"):
        assert len(series(client, job, term)) == 10, term
    assert series(client, job, "lr_generator")[-1] == 0.2  # the released MNIST rate
    heldout = digits[1]
    score = accuracy(downloaded_student(client, job), heldout.images, heldout.labels)
    print(f"dafl over HTTP: held-out {score:.3f}")
    assert score > 0.3, score


def test_dfq_over_http_runs_on_the_batchnorm_teacher_and_matches_its_statistics(
    client: TestClient, settings: Settings, batchnorm_teacher_file: Path
) -> None:
    """The generator learns the teacher's BatchNorm statistics (the loss falls by a fifth in 40
    iterations here) and every term is logged. This job is too short to claim accuracy; the
    2-minute runs in docs/results.md reach 92-95% on the same teacher."""
    teacher_id = upload_batchnorm_teacher(client, batchnorm_teacher_file)
    job = run_to_success(
        client,
        settings,
        teacher_id,
        "dfq",
        iterations=40,
        batch_size=64,
        hyperparameters={"log_every": 10, "student_steps": 2},
    )
    for term in ("loss_one_hot", "loss_balance", "loss_adversarial", "loss_student"):
        assert len(series(client, job, term)) == 4, term
    assert all(value < 0 for value in series(client, job, "loss_adversarial"))  # a real student
    bn = series(client, job, "loss_bn")
    assert bn[-1] < 0.8 * bn[0], bn
    student = downloaded_student(client, job)
    assert student(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


def test_dfq_on_a_teacher_without_batchnorm_is_a_422_naming_the_methods_that_would_work(
    client: TestClient, teacher_file: Path
) -> None:
    teacher_id = upload_lenet_teacher(client, teacher_file)
    response = client.post(
        "/v1/jobs",
        json={
            "teacher_id": teacher_id,
            "method": "dfq",
            "student": {"architecture": "lenet5_half"},
            "iterations": 5,
        },
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "teacher_has_no_batchnorm"
    assert "method dfq" in error["message"] and "BatchNorm" in error["message"]
    usable = error["message"].split("methods this teacher can run: ")[1].split(", ")
    assert "dafl" in usable and "dfq" not in usable
    dafl = client.post(
        "/v1/jobs",
        json={
            "teacher_id": teacher_id,
            "method": "dafl",
            "student": {"architecture": "lenet5_half"},
            "iterations": 5,
        },
    )
    assert dafl.status_code == 202, dafl.text
