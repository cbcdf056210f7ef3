"""The user's whole path over HTTP: upload a teacher, start a job, poll it, download the student."""

from __future__ import annotations

import io
import time
from pathlib import Path

import httpx
import onnxruntime
from PIL import Image

from core.datasets import LabelledImages
from core.evaluation import accuracy, predict
from core.models import build
from core.weights import load_weights, read_state_dict
from tests.processes import upload_lenet_teacher, wait_for_job

# 150 iterations with a quarter-width generator: ~92% held-out accuracy in well under a minute here.
JOB = {
    "method": "zskt",
    "student": {"architecture": "lenet5_half"},
    "iterations": 150,
    "batch_size": 128,
    "seed": 7,
    "hyperparameters": {"generator_width": 32, "log_every": 10},
    "sample_every": 50,
}


def distil_over_http(
    base_url: str, teacher_file: Path, heldout: LabelledImages, timeout: float = 600
) -> dict:
    """Runs the flow and checks every step a user sees; returns the final job with the student's accuracy."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        teacher_id = upload_lenet_teacher(client, teacher_file)
        job = client.post("/v1/jobs", json={"teacher_id": teacher_id, **JOB})
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]

        seen_running = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and seen_running is None:
            current = client.get(f"/v1/jobs/{job_id}").json()
            if current["status"] == "running" and current["progress"]["iteration"] > 0:
                seen_running = current
            elif current["status"] != "queued" and current["status"] != "running":
                break
            time.sleep(0.5)
        assert seen_running is not None, f"never saw the job running with progress: {current}"
        progress = seen_running["progress"]
        assert (
            0 < progress["fraction"] < 1
            and progress["samples_per_second"] > 0
            and progress["eta_seconds"] > 0
        )
        assert {"kl", "loss_student", "pseudo_agreement"} <= set(seen_running["metrics"])

        final = wait_for_job(client, job_id, timeout)
        assert final["status"] == "succeeded", final
        assert (
            final["progress"]["iteration"] == JOB["iterations"]
            and final["progress"]["fraction"] == 1.0
        )
        assert client.get("/v1/jobs").json()["items"][0]["id"] == job_id
        # utilisation against the worker's measured peak, and the job's memory, are reported
        # (above 1 is possible only when the peak was measured while other work held the cores)
        assert 0 < final["progress"]["utilisation"] < 5, final["progress"]
        assert final["progress"]["flops_per_second"] > 0
        assert final["progress"]["peak_rss_bytes"] > 50 * 2**20

        series = client.get(f"/v1/jobs/{job_id}/metrics", params={"name": "kl"}).json()["items"]
        assert [point["step"] for point in series] == list(range(10, JOB["iterations"] + 1, 10))

        samples = client.get(final["links"]["samples"]).json()["items"]
        assert [sample["step"] for sample in samples] == [50, 100, 150]
        grid = client.get(samples[-1]["url"])
        assert grid.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(grid.content)).size[0] > 32 * 8

        download = client.get(final["links"]["student"], follow_redirects=True)
        assert download.status_code == 200
        onnx = client.get(
            final["links"]["student"], params={"format": "onnx"}, follow_redirects=True
        )
        assert onnx.status_code == 200
        redirected = (
            client.get(final["links"]["student"], params={"format": "onnx"}).status_code == 307
        )
    student = load_weights(build("lenet5_half"), read_state_dict(download.content))
    # the ONNX student, run by onnxruntime, predicts what the torch student predicts on real digits
    session = onnxruntime.InferenceSession(onnx.content, providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": heldout.images[:256].numpy()})
    assert (logits.argmax(1) == predict(student, heldout.images[:256]).numpy()).all()
    return final | {
        "student_accuracy": accuracy(student, heldout.images, heldout.labels),
        "download_redirected": redirected,
    }
