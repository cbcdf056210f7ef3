"""Blob keys are a storage format: stored files are found again only under the same strings."""

from __future__ import annotations

from service import blob_keys


def test_every_key_is_spelled_as_the_stored_data_expects() -> None:
    assert (
        blob_keys.teacher_weights_key("tch_1", program=False)
        == "teachers/tch_1/weights.safetensors"
    )
    assert blob_keys.teacher_weights_key("tch_1", program=True) == "teachers/tch_1/weights.program"
    assert blob_keys.teacher_metadata_key("tch_1") == "teachers/tch_1/metadata.safetensors"
    assert blob_keys.dataset_key("dst_1", "npz") == "datasets/dst_1/data.npz"
    assert blob_keys.student_key("job_1") == "jobs/job_1/student.safetensors"
    assert blob_keys.student_export_key("job_1", "onnx") == "jobs/job_1/student.onnx"
    assert (
        blob_keys.student_export_key("job_1", "torchscript") == "jobs/job_1/student.torchscript.pt"
    )
    assert blob_keys.checkpoint_key("job_1") == "jobs/job_1/checkpoint.pt"
    assert blob_keys.samples_key("job_1", 42) == "jobs/job_1/samples/000000042.png"
    assert blob_keys.transition_curves_key("job_1") == "jobs/job_1/transition-curves.png"
