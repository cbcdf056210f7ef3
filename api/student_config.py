"""A student's config.json in timm's pretrained-config shape: with the student's safetensors saved
beside it as model.safetensors, `timm.create_model("local-dir:<folder>", pretrained=True)` loads
a timm student in one line, and every student says how it was made."""

from __future__ import annotations

from typing import Any

from service.models import Job, Teacher


def student_config(job: Job, teacher: Teacher) -> dict[str, Any]:
    library, _, name = job.student_architecture.rpartition(":")
    channels = int(teacher.input_shape[0])
    num_classes = int(teacher.num_classes)
    return {
        "architecture": name,
        "library": library or "dfkd",  # dfkd: core.models.build(architecture, **model_args)
        "num_classes": num_classes,
        # segmentation students give per-pixel logits [N, K, H, W]
        "task": teacher.task_type,
        "model_args": dict(job.student_kwargs),
        "pretrained_cfg": {
            "input_size": [int(size) for size in teacher.input_shape],
            "mean": teacher.input_mean or [0.0] * channels,
            "std": teacher.input_std or [1.0] * channels,
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "num_classes": num_classes,
        },
        "teacher_sha256": teacher.sha256,
        "teacher_architecture": teacher.architecture,
        "method": job.method,
        "job_id": job.id,
    }
