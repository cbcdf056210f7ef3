"""Where each stored file lives in the blob store: one function per kind of file.

The strings are a storage format: blobs already written under them must stay findable, so a
key changes only together with a migration of the stored data."""

from __future__ import annotations

from typing import Literal

StudentExport = Literal["onnx", "torchscript"]
_EXPORT_FILES: dict[str, str] = {"onnx": "student.onnx", "torchscript": "student.torchscript.pt"}


def teacher_weights_key(teacher_id: str, *, program: bool) -> str:
    return f"teachers/{teacher_id}/weights.{'program' if program else 'safetensors'}"


def teacher_metadata_key(teacher_id: str) -> str:
    return f"teachers/{teacher_id}/metadata.safetensors"


def dataset_key(dataset_id: str, file_format: str) -> str:
    return f"datasets/{dataset_id}/data.{file_format}"


def student_key(job_id: str) -> str:
    return f"jobs/{job_id}/student.safetensors"


def student_export_key(job_id: str, export: StudentExport) -> str:
    return f"jobs/{job_id}/{_EXPORT_FILES[export]}"


def checkpoint_key(job_id: str) -> str:
    return f"jobs/{job_id}/checkpoint.pt"


def samples_key(job_id: str, step: int) -> str:
    return f"jobs/{job_id}/samples/{step:09d}.png"


def transition_curves_key(job_id: str) -> str:
    return f"jobs/{job_id}/transition-curves.png"


def synthetic_key(job_id: str) -> str:
    return f"jobs/{job_id}/synthetic.npz"


# --- every key of one object starts with its prefix: deleting the prefix deletes the object's files


def teacher_prefix(teacher_id: str) -> str:
    return f"teachers/{teacher_id}/"


def dataset_prefix(dataset_id: str) -> str:
    return f"datasets/{dataset_id}/"


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/"
