"""A segmentation job on the deployment users run (issue 15): the API and a Celery worker on
PostgreSQL, Redis and an S3 endpoint. The worker is killed with -9 mid-job; a new worker resumes
the job from its checkpoint, and the job ends with a report whose mIoU is the one computed here
from the student downloaded from S3, an ONNX student giving per-pixel logits, and sample grids."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from PIL import Image

from core.digit_scenes import SCENE_CLASSES, Scenes
from core.models import build
from core.segmentation import segmentation_scores
from core.weights import load_weights, read_state_dict
from tests.faults.deployment import Deployment, expected_steps
from tests.processes import upload_segmentation_teacher

pytestmark = pytest.mark.timeout(900)

JOB = {
    "method": "dfad",
    "student": {"architecture": "deeplabv3_mobilenet_mini", "kwargs": {"width": 8}},
    "iterations": 30,
    "batch_size": 16,
    "seed": 11,
    "checkpoint_every": 10,
    "sample_every": 15,
    "hyperparameters": {"log_every": 5, "lr_student": 0.05},
}


def test_a_segmentation_job_killed_mid_run_resumes_and_reports_miou_from_s3(
    deployment: Deployment,
    segmentation_teacher_file: Path,
    heldout_scenes_file: Path,
    scenes: tuple[Scenes, Scenes],
) -> None:
    heldout = scenes[1]
    with deployment.client() as client:
        teacher_id = upload_segmentation_teacher(client, segmentation_teacher_file)
        with heldout_scenes_file.open("rb") as handle:
            dataset = client.post("/v1/datasets", files={"file": ("scenes.npz", handle)})
        assert dataset.status_code == 201, dataset.text
        assert dataset.json()["task_type"] == "segmentation"
        worker = deployment.start_worker()
        response = client.post(
            "/v1/jobs",
            json={**JOB, "teacher_id": teacher_id, "evaluation_dataset_id": dataset.json()["id"]},
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]

    deployment.wait_for_step(job_id, 12, timeout=300)
    checkpoint = deployment.checkpoint(job_id)
    assert checkpoint is not None and checkpoint["step"] >= 10
    deployment.kill_worker(worker)
    killed_step = deployment.job(job_id)["progress"]["iteration"]
    deployment.start_worker()
    final = deployment.wait_for_end(job_id, timeout=400)

    assert final["status"] == "succeeded", final
    assert final["attempts"] == 2
    messages = [event["message"] for event in deployment.events(job_id)]
    resumed = [re.search(r"resuming from the checkpoint at step (\d+)", m) for m in messages]
    assert any(match and 0 < int(match.group(1)) <= killed_step for match in resumed), messages
    assert deployment.metric_steps(job_id, "l1") == expected_steps(JOB["iterations"], 5)

    with deployment.client() as client:
        student_file = client.get(final["links"]["student"], follow_redirects=True)
        assert student_file.status_code == 200
        student = load_weights(
            build("deeplabv3_mobilenet_mini", in_channels=1, width=8),
            read_state_dict(student_file.content),
        )
        report = client.get(final["links"]["report"]).json()
        expected = segmentation_scores(student, heldout.images, heldout.masks, SCENE_CLASSES)
        assert report["student_miou"] == pytest.approx(expected.mean_iou, abs=1e-9)
        assert report["teacher_miou"] > report["student_miou"] > 0

        onnx_file = client.get(
            final["links"]["student"], params={"format": "onnx"}, follow_redirects=True
        )
        assert onnx_file.status_code == 200
        session = onnxruntime.InferenceSession(
            onnx_file.content, providers=["CPUExecutionProvider"]
        )
        (logits,) = session.run(["logits"], {"input": heldout.images[:3].numpy()})
        assert logits.shape == (3, SCENE_CLASSES, 64, 64) and np.isfinite(logits).all()

        samples = client.get(final["links"]["samples"]).json()["items"]
        assert [sample["step"] for sample in samples] == [15, 30]
        grid = client.get(samples[-1]["url"], follow_redirects=True)
        assert Image.open(io.BytesIO(grid.content)).mode == "RGB"
