"""One job end to end through `dfkd serve` on the embedded default, on the device DFKD_DEVICE names.

    .venv/bin/python bench/gpu_job.py --device cuda --out job.json
    .venv/bin/python bench/gpu_job.py --device cpu --iterations 20 --teacher-epochs 1   # dry run

The user's path: a LeNet-5 teacher trained on 4 000 real digits (1 000 held out), `dfkd serve`
with DFKD_DEVICE set (SQLite and a local folder under a temporary directory, the job in the
embedded runner's child process), upload of the teacher and of the held-out digits as an
evaluation set, a ZSKT job with the device's default hyperparameters (the paper's generator width
on CUDA), polling until it ends, the student downloaded as safetensors and ONNX and scored on the
held-out digits here, and the service's own report (accuracy, agreement, MTE). Everything the
user would see is written to `--out` as JSON; the exit status is 0 only when the job succeeded and
its student was scored.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime
import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.service_harness import start_api, stop  # noqa: E402
from core.datasets import mnist_digits  # noqa: E402
from core.evaluation import accuracy, predict  # noqa: E402
from core.models import build  # noqa: E402
from core.training_supervised import train_classifier  # noqa: E402
from core.weights import load_weights, read_state_dict  # noqa: E402
from tests.processes import embedded_env, upload_lenet_teacher  # noqa: E402

FINAL = {"succeeded", "failed", "cancelled"}


def poll(client: httpx.Client, job_id: str, timeout: float) -> tuple[dict, list[dict]]:
    """Polls twice a second; returns the final job and what was seen on the way."""
    seen: list[dict] = []
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        job = client.get(f"/v1/jobs/{job_id}").json()
        progress = job.get("progress") or {}
        seen.append(
            {
                "seconds": round(time.monotonic() - began, 2),
                "status": job["status"],
                "iteration": progress.get("iteration"),
                "samples_per_second": progress.get("samples_per_second"),
            }
        )
        if job["status"] in FINAL:
            return job, seen
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} did not end in {timeout:.0f} s; last seen {seen[-1:]}")


def first_seconds(seen: list[dict], status: str) -> float | None:
    return next((point["seconds"] for point in seen if point["status"] == status), None)


def upload_evaluation_set(client: httpx.Client, images: torch.Tensor, labels: torch.Tensor) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, images=images.numpy(), labels=labels.numpy())
    response = client.post("/v1/datasets", files={"file": ("heldout.npz", buffer.getvalue())})
    response.raise_for_status()
    return response.json()["id"]


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    train, heldout = mnist_digits(seed=0).split(4000)
    torch.manual_seed(0)
    began = time.monotonic()
    teacher = train_classifier(build("lenet5"), train, epochs=args.teacher_epochs, seed=0)
    result: dict[str, Any] = {
        "device": args.device,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "teacher_training_seconds": round(time.monotonic() - began, 1),
        "teacher_accuracy": accuracy(teacher, heldout.images, heldout.labels),
    }
    teacher_file = workdir / "teacher.safetensors"
    save_file(teacher.state_dict(), str(teacher_file))

    env = embedded_env(workdir / "data", DFKD_DEVICE=args.device, DFKD_LOG_FORMAT="text")
    server, base = start_api(env, workdir / "serve.log")
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            teacher_id = upload_lenet_teacher(client, teacher_file)
            evaluation_id = upload_evaluation_set(client, heldout.images, heldout.labels)
            spec = {
                "teacher_id": teacher_id,
                "method": "zskt",
                "student": {"architecture": "lenet5_half"},
                "iterations": args.iterations,
                "batch_size": 128,
                "seed": 0,
                "evaluation_dataset_id": evaluation_id,
                "mte_images": args.mte_images,
                "mte_steps": args.mte_steps,
                "sample_every": max(1, args.iterations // 4),
                "checkpoint_every": max(1, args.iterations // 2),
            }
            created = client.post("/v1/jobs", json=spec)
            created.raise_for_status()
            job_id = created.json()["id"]
            final, seen = poll(client, job_id, args.timeout)
            events = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 200}).json()
            result |= {
                "job_spec": spec,
                "status": final["status"],
                "error": final.get("error"),
                "hyperparameters": final.get("hyperparameters"),
                "progress": final.get("progress"),
                "seconds_to_running": first_seconds(seen, "running"),
                "seconds_to_end": seen[-1]["seconds"],
                "polls": seen,
                "events": [event["message"] for event in events["items"]],
            }
            if final["status"] != "succeeded":
                result["serve_log_tail"] = (workdir / "serve.log").read_text()[-4000:]
                return result
            result["report"] = client.get(f"/v1/jobs/{job_id}/report").json()
            weights = client.get(f"/v1/jobs/{job_id}/student").content
            exported = client.get(f"/v1/jobs/{job_id}/student", params={"format": "onnx"}).content
    finally:
        stop(server)
    student = load_weights(build("lenet5_half"), read_state_dict(weights))
    session = onnxruntime.InferenceSession(exported, providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": heldout.images.numpy()})
    result |= {
        "student_accuracy": accuracy(student, heldout.images, heldout.labels),
        "onnx_student_accuracy": float(
            (torch.from_numpy(logits).argmax(1) == heldout.labels).float().mean()
        ),
        "onnx_agrees_with_safetensors": float(
            (torch.from_numpy(logits).argmax(1) == predict(student, heldout.images)).float().mean()
        ),
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="DFKD_DEVICE of the service")
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--mte-images", type=int, default=100)
    parser.add_argument("--mte-steps", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=300, help="seconds the job may take")
    parser.add_argument("--out", type=Path, default=Path("gpu-job.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dfkd-gpu-job-") as workdir:
        result = run(args, Path(workdir))
    args.out.write_text(json.dumps(result, indent=1, default=str))
    summary = {
        key: result.get(key)
        for key in (
            "device",
            "status",
            "teacher_accuracy",
            "student_accuracy",
            "onnx_agrees_with_safetensors",
            "seconds_to_end",
        )
    }
    summary["utilisation"] = (result.get("progress") or {}).get("utilisation")
    print(json.dumps(summary))
    return 0 if result.get("status") == "succeeded" and "student_accuracy" in result else 1


if __name__ == "__main__":
    sys.exit(main())
