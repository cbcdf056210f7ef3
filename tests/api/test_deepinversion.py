"""DeepInversion (+ ADI) end to end on a BatchNorm teacher trained here: over HTTP to a usable
student and a synthetic set, refused on a teacher without BatchNorm, resumed bit-exact."""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save_file
from torch import nn

from core.datasets import LabelledImages
from core.evaluation import accuracy
from core.loop import distill
from core.methods.deepinversion import DeepInversionConfig
from core.models import build
from core.training import DistillationTask, TrainingHooks
from core.training_supervised import train_classifier
from core.weights import load_weights, read_state_dict
from service.settings import Settings
from worker.context import make_context
from worker.job import run_job

BN_TEACHER = {"architecture": "resnet8", "architecture_kwargs": '{"width": 8}'}
# a quick CPU job: 8 synthesised batches of 64 inputs, 100 Adam steps each
QUICK = {"iterations": 8, "batch_size": 64, "hyperparameters": {"student_steps": 30}}


@pytest.fixture(scope="session")
def bn_teacher(digits: tuple[LabelledImages, LabelledImages]) -> nn.Module:
    torch.manual_seed(0)
    teacher = train_classifier(build("resnet8", width=8), digits[0], epochs=4, seed=0)
    assert accuracy(teacher, digits[1].images, digits[1].labels) > 0.9
    return teacher.eval()


@pytest.fixture(scope="session")
def bn_teacher_file(bn_teacher: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bn_teacher") / "resnet8.safetensors"
    save_file(bn_teacher.state_dict(), str(path))
    return path


def post_teacher(client: TestClient, path: Path, **form: str) -> str:
    with path.open("rb") as handle:
        response = client.post("/v1/teachers", files={"file": (path.name, handle)}, data=form)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_a_deepinversion_job_over_http_gives_a_student_and_its_synthetic_set(
    client: TestClient,
    settings: Settings,
    bn_teacher: nn.Module,
    bn_teacher_file: Path,
    digits: tuple[LabelledImages, LabelledImages],
) -> None:
    teacher_id = post_teacher(client, bn_teacher_file, **BN_TEACHER)
    job = client.post(
        "/v1/jobs",
        json={
            "teacher_id": teacher_id,
            "method": "deepinversion",
            "student": {"architecture": "lenet5_half"},
            "sample_every": 4,
            **QUICK,
        },
    )
    assert job.status_code == 202, job.text
    shown = job.json()["hyperparameters"]
    assert (shown["synthesis_steps"], shown["bn"], shown["flip"]) == (100, 1.0, False)
    run_job(job.json()["id"], make_context(settings))

    final = client.get(f"/v1/jobs/{job.json()['id']}").json()
    assert final["status"] == "succeeded", final["error"]
    assert final["metrics"]["pool_size"] == 8 * 64
    assert {"cross_entropy", "bn", "tv_l2", "pool_agreement"} <= set(final["metrics"])
    samples = client.get(final["links"]["samples"]).json()["items"]
    assert [sample["step"] for sample in samples] == [4, 8]

    weights = client.get(final["links"]["student"], params={"delivery": "stream"}).content
    student = load_weights(build("lenet5_half"), read_state_dict(weights))
    heldout = digits[1]
    assert accuracy(student, heldout.images, heldout.labels) > 0.5  # chance: 0.1

    synthetic = client.get(f"/v1/jobs/{final['id']}/synthetic", params={"delivery": "stream"})
    assert synthetic.status_code == 200
    arrays = np.load(io.BytesIO(synthetic.content))
    images, logits = torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["logits"])
    assert images.shape == (8 * 64, 1, 32, 32) and logits.shape == (8 * 64, 10)
    with torch.no_grad():
        torch.testing.assert_close(bn_teacher(images), logits, rtol=1e-4, atol=1e-4)


def test_a_teacher_without_batchnorm_is_refused_naming_what_would_work(
    client: TestClient, teacher_id: str
) -> None:
    response = client.post(
        "/v1/jobs",
        json={
            "teacher_id": teacher_id,
            "method": "deepinversion",
            "student": {"architecture": "lenet5_half"},
            **QUICK,
        },
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "teacher_has_no_batchnorm"
    assert "method deepinversion" in error["message"] and "BatchNorm" in error["message"]
    assert "methods this teacher can run: dfad, zskt" in error["message"]


class Checkpoints(TrainingHooks):
    checkpoint_every = 2

    def __init__(self) -> None:
        self.states: dict[int, dict[str, Any]] = {}

    def on_checkpoint(self, step: int, state: dict[str, Any]) -> None:
        self.states[step] = copy.deepcopy(state)


def test_resuming_from_a_checkpoint_gives_the_uninterrupted_student(bn_teacher: nn.Module) -> None:
    config = DeepInversionConfig(
        iterations=4, batch_size=16, synthesis_steps=5, student_steps=3, competition=1.0
    )

    def task() -> DistillationTask:
        torch.manual_seed(0)
        return DistillationTask(copy.deepcopy(bn_teacher), build("lenet5_half"), (1, 32, 32), 10)

    hooks = Checkpoints()
    straight = distill(task(), config, hooks)
    assert len(hooks.states[2]["state"]["pool"]["images"]) == 32
    resumed = distill(task(), config, resume_from=hooks.states[2])
    for name, tensor in straight.student.state_dict().items():
        assert torch.equal(resumed.student.state_dict()[name], tensor), name
    assert torch.equal(straight.synthetic[0], resumed.synthetic[0])
