"""Segmentation over HTTP on the embedded default (issue 15): a DeepLabV3 teacher trained in the
session on scenes of real digits, a short DFAD job into the MobileNet student with an evaluation
set of held-out scenes, the report's mIoU recomputed here from the downloaded student, the
exports' per-pixel outputs, the three-panel sample grids, and every refusal a user can meet."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from torch import nn

from core.digit_scenes import SCENE_CLASSES, Scenes
from core.export import onnx_bytes
from core.models import build
from core.segmentation import segmentation_scores
from core.weights import load_weights, read_state_dict
from service.settings import Settings
from tests.conftest import SEGMENTATION_TEACHER_MIOU
from tests.processes import upload_segmentation_teacher
from worker.context import make_context
from worker.job import run_job

pytestmark = pytest.mark.usefixtures("one_thread")

STUDENT = {"architecture": "deeplabv3_mobilenet_mini", "kwargs": {"width": 8}}
# 24 iterations of 5 student steps at batch 16: ~20 s here; the bench (docs/results.md,
# "segmentation") measures what longer runs reach
SHORT_JOB = {
    "method": "dfad",
    "student": STUDENT,
    "iterations": 24,
    "batch_size": 16,
    "seed": 5,
    "sample_every": 12,
    "hyperparameters": {"log_every": 6, "lr_student": 0.05},
}


def upload_scenes(client: TestClient, path: Path, name: str = "scenes.npz") -> dict:
    with path.open("rb") as handle:
        response = client.post("/v1/datasets", files={"file": (name, handle)})
    assert response.status_code == 201, response.text
    return response.json()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_a_dfad_job_on_a_segmentation_teacher_reports_miou_grids_and_per_pixel_exports(
    client: TestClient,
    settings: Settings,
    segmentation_teacher_file: Path,
    heldout_scenes_file: Path,
    scenes: tuple[Scenes, Scenes],
) -> None:
    heldout = scenes[1]
    architectures = {item["name"]: item for item in client.get("/v1/architectures").json()["items"]}
    assert architectures["deeplabv3_resnet_mini"]["task"] == "segmentation"
    assert architectures["deeplabv3_mobilenet_mini"]["task"] == "segmentation"
    assert architectures["lenet5"]["task"] == "classification"

    teacher_id = upload_segmentation_teacher(client, segmentation_teacher_file)
    teacher = client.get(f"/v1/teachers/{teacher_id}").json()
    assert teacher["num_classes"] == SCENE_CLASSES and teacher["input_shape"] == [1, 64, 64]
    dataset = upload_scenes(client, heldout_scenes_file)
    assert dataset["task_type"] == "segmentation"
    assert dataset["num_examples"] == len(heldout.masks)
    # pixels per class, the ignored rims (255) left out
    labelled = heldout.masks[heldout.masks != 255]
    assert dataset["class_counts"] == {
        str(c): int((labelled == c).sum()) for c in range(SCENE_CLASSES) if (labelled == c).any()
    }

    job = client.post(
        "/v1/jobs",
        json={**SHORT_JOB, "teacher_id": teacher_id, "evaluation_dataset_id": dataset["id"]},
    )
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    # the student inherits classes, channels and size from the teacher
    assert job.json()["student"]["kwargs"]["num_classes"] == SCENE_CLASSES
    run_job(job_id, make_context(settings))

    final = client.get(f"/v1/jobs/{job_id}").json()
    assert final["status"] == "succeeded", final["error"]
    metrics = final["metrics"]
    assert {"l1", "loss_generator", "pseudo_agreement", "fresh_agreement"} <= set(metrics)
    assert 0 <= metrics["fresh_agreement"] <= 1
    assert metrics["loss_generator"] < 0  # -log(L1 + 1) of a positive discrepancy

    # the report's mIoU is the one computed here from the downloaded student
    student_file = client.get(final["links"]["student"])
    assert student_file.status_code == 200
    student = load_weights(
        build("deeplabv3_mobilenet_mini", in_channels=1, width=8),
        read_state_dict(student_file.content),
    )
    report = client.get(final["links"]["report"]).json()
    expected = segmentation_scores(student, heldout.images, heldout.masks, SCENE_CLASSES)
    assert report["student_miou"] == pytest.approx(expected.mean_iou, abs=1e-9)
    assert report["student_per_class_iou"] == pytest.approx(expected.per_class_iou, abs=1e-9)
    assert len(report["teacher_per_class_iou"]) == SCENE_CLASSES
    assert report["teacher_miou"] > SEGMENTATION_TEACHER_MIOU
    assert report["miou_ratio"] == pytest.approx(report["student_miou"] / report["teacher_miou"])
    assert "mte" not in report and "student_accuracy" not in report
    # the job taught the student something: above the same network untrained
    torch.manual_seed(0)
    untrained = build("deeplabv3_mobilenet_mini", in_channels=1, width=8)
    before = segmentation_scores(untrained, heldout.images, heldout.masks, SCENE_CLASSES)
    assert report["student_miou"] > before.mean_iou, (report["student_miou"], before.mean_iou)

    # exports give per-pixel logits [B, K, H, W], equal to the torch student's
    onnx_file = client.get(final["links"]["student"], params={"format": "onnx"})
    assert onnx_file.status_code == 200
    session = onnxruntime.InferenceSession(onnx_file.content, providers=["CPUExecutionProvider"])
    batch = heldout.images[:5]
    (logits,) = session.run(["logits"], {"input": batch.numpy()})
    assert logits.shape == (5, SCENE_CLASSES, 64, 64)
    with torch.no_grad():
        reference = student.eval()(batch)
    assert np.abs(logits - reference.numpy()).max() < 1e-3
    scripted = client.get(final["links"]["student"], params={"format": "torchscript"})
    assert scripted.status_code == 200
    loaded = torch.jit.load(io.BytesIO(scripted.content))
    assert tuple(loaded(batch).shape) == (5, SCENE_CLASSES, 64, 64)
    config = client.get(f"/v1/jobs/{job_id}/student/config").json()
    assert config["task"] == "segmentation"

    # each grid cell: the input, the teacher's mask, the student's mask, side by side
    samples = client.get(final["links"]["samples"]).json()["items"]
    assert [sample["step"] for sample in samples] == [12, 24]
    grid = Image.open(io.BytesIO(client.get(samples[-1]["url"]).content))
    assert grid.mode == "RGB"
    assert grid.size[0] > grid.size[1] * 2  # 4 x 4 cells of 3 panels: about 3x wider than high


@pytest.fixture
def segmentation_teacher_id(client: TestClient, segmentation_teacher_file: Path) -> str:
    return upload_segmentation_teacher(client, segmentation_teacher_file)


def post_job(client: TestClient, teacher_id: str, **changes: object) -> dict:
    response = client.post("/v1/jobs", json={**SHORT_JOB, "teacher_id": teacher_id, **changes})
    assert response.status_code == 422, response.text
    return response.json()["error"]


def test_a_method_without_segmentation_is_refused_naming_the_method_and_the_task(
    client: TestClient, segmentation_teacher_id: str
) -> None:
    for method in ("zskt", "deepinversion", "dafl"):
        error = post_job(client, segmentation_teacher_id, method=method, hyperparameters={})
        assert error["code"] == "unsupported_task_type", error
        assert method in error["message"] and "segmentation" in error["message"]
        assert "dfad" in error["message"]  # what the teacher can run
    methods = {item["name"]: item for item in client.get("/v1/methods").json()["items"]}
    assert "segmentation" in methods["dfad"]["task_types"]
    assert methods["zskt"]["task_types"] == ["classification"]


def test_students_of_the_other_task_are_refused(
    client: TestClient, segmentation_teacher_id: str, teacher_id: str
) -> None:
    error = post_job(client, segmentation_teacher_id, student={"architecture": "lenet5_half"})
    assert error["code"] == "task_mismatch"
    assert "lenet5_half" in error["message"] and "segmentation" in error["message"]
    error = post_job(client, teacher_id, student=STUDENT)
    assert error["code"] == "task_mismatch"
    assert "deeplabv3_mobilenet_mini" in error["message"] and "classification" in error["message"]


def test_datasets_must_match_the_teachers_task_classes_and_size(
    client: TestClient,
    segmentation_teacher_id: str,
    teacher_id: str,
    heldout_file: Path,
    heldout_scenes_file: Path,
) -> None:
    labels = upload_scenes(client, heldout_file, "digits.npz")
    assert labels["task_type"] == "classification"
    error = post_job(client, segmentation_teacher_id, evaluation_dataset_id=labels["id"])
    assert error["code"] == "dataset_mismatch" and "masks" in error["message"]
    masks = upload_scenes(client, heldout_scenes_file)
    error = post_job(
        client,
        teacher_id,
        evaluation_dataset_id=masks["id"],
        method="zskt",
        student={"architecture": "lenet5_half"},
        hyperparameters={},
    )
    assert error["code"] == "dataset_mismatch" and "labels" in error["message"]

    images = np.zeros((4, 1, 64, 64), np.uint8)
    too_many_classes = np.full((4, 64, 64), SCENE_CLASSES, np.uint8)
    response = client.post(
        "/v1/datasets",
        files={"file": ("c.npz", npz_bytes(images=images, masks=too_many_classes))},
    )
    assert response.status_code == 201, response.text
    error = post_job(client, segmentation_teacher_id, evaluation_dataset_id=response.json()["id"])
    assert error["code"] == "dataset_mismatch" and str(SCENE_CLASSES) in error["message"]

    small = client.post(
        "/v1/datasets",
        files={
            "file": (
                "s.npz",
                npz_bytes(images=np.zeros((2, 1, 32, 32), np.uint8), masks=np.zeros((2, 32, 32))),
            )
        },
    )
    assert small.status_code == 422  # float masks
    small = client.post(
        "/v1/datasets",
        files={
            "file": (
                "s.npz",
                npz_bytes(
                    images=np.zeros((2, 1, 32, 32), np.uint8), masks=np.zeros((2, 32, 32), np.int64)
                ),
            )
        },
    )
    assert small.status_code == 201, small.text
    error = post_job(client, segmentation_teacher_id, evaluation_dataset_id=small.json()["id"])
    assert error["code"] == "dataset_mismatch" and "[1, 64, 64]" in error["message"]
    error = post_job(client, segmentation_teacher_id, few_shot_dataset_id=masks["id"])
    assert error["code"] == "unsupported_task_type" and "few-shot" in error["message"]


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        (
            {
                "images": np.zeros((3, 1, 8, 8), np.uint8),
                "masks": np.full((3, 8, 8), 300, np.int64),
            },
            "mask values are class indices 0-254, or 255",
        ),
        (
            {"images": np.zeros((3, 1, 8, 8), np.uint8), "masks": np.full((3, 8, 8), -1, np.int64)},
            "class indices >= 0",
        ),
        (
            {"images": np.zeros((3, 1, 8, 8), np.uint8), "masks": np.zeros((3, 4, 4), np.uint8)},
            "the images' height and width",
        ),
        (
            {"images": np.zeros((3, 1, 8, 8), np.uint8), "masks": np.zeros((2, 8, 8), np.uint8)},
            "one mask per image",
        ),
        (
            {
                "images": np.zeros((3, 1, 8, 8), np.uint8),
                "masks": np.zeros((3, 8, 8), np.uint8),
                "labels": np.zeros(3, np.int64),
            },
            "not both",
        ),
    ],
    ids=["past-255", "negative", "wrong-size", "wrong-count", "labels-and-masks"],
)
def test_bad_mask_sets_are_refused_with_the_reason(
    client: TestClient, arrays: dict[str, np.ndarray], fragment: str
) -> None:
    response = client.post("/v1/datasets", files={"file": ("bad.npz", npz_bytes(**arrays))})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_dataset" and fragment in error["message"], error
    assert client.get("/v1/datasets").json()["items"] == []


def test_a_mask_set_in_safetensors_is_read_like_an_npz(client: TestClient, tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    masks = np.zeros((3, 8, 8), np.uint8)
    masks[:, :2] = 4
    masks[:, 7] = 255
    path = tmp_path / "scenes.safetensors"
    save_file({"images": np.zeros((3, 1, 8, 8), np.uint8), "masks": masks}, str(path))
    dataset = upload_scenes(client, path, "scenes.safetensors")
    assert dataset["task_type"] == "segmentation"
    assert dataset["class_counts"] == {"0": 3 * 5 * 8, "4": 3 * 2 * 8}


def test_the_teacher_forward_check_refuses_weights_of_another_class_count(
    client: TestClient, segmentation_teacher: nn.Module, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "teacher.safetensors"
    save_file(segmentation_teacher.state_dict(), str(path))
    with path.open("rb") as handle:
        response = client.post(
            "/v1/teachers",
            files={"file": ("t.safetensors", handle)},
            data={
                "architecture": "deeplabv3_resnet_mini",
                "architecture_kwargs": '{"in_channels": 1, "width": 8, "num_classes": 7}',
            },
        )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_weights"


def test_the_teachers_onnx_export_uploads_as_a_segmentation_teacher_and_runs(
    client: TestClient, settings: Settings, segmentation_teacher: nn.Module
) -> None:
    graph = onnx_bytes(segmentation_teacher, (1, 64, 64))
    uploaded = client.post(
        "/v1/teachers", files={"file": ("t.onnx", graph)}, data={"format": "onnx"}
    )
    assert uploaded.status_code == 201, uploaded.text
    teacher = uploaded.json()
    assert teacher["task_type"] == "segmentation"
    assert teacher["num_classes"] == SCENE_CLASSES and teacher["input_shape"] == [1, 64, 64]
    job = client.post(
        "/v1/jobs",
        json={**SHORT_JOB, "teacher_id": teacher["id"], "iterations": 2, "sample_every": 0},
    )
    assert job.status_code == 202, job.text
    run_job(job.json()["id"], make_context(settings))
    final = client.get(f"/v1/jobs/{job.json()['id']}").json()
    assert final["status"] == "succeeded", final["error"]
