"""`dfkd distill`: the core on a local teacher file, no service."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from core.datasets import LabelledImages, save_npz
from core.digit_scenes import Scenes
from core.models import build
from core.weights import load_weights, read_state_dict
from tests.processes import DFKD


def test_distill_writes_a_loadable_student_metrics_and_an_evaluation(
    tmp_path: Path, teacher_file: Path, heldout_file: Path
) -> None:
    out, metrics = tmp_path / "student.safetensors", tmp_path / "metrics.jsonl"
    result = subprocess.run(
        [
            DFKD,
            "distill",
            "--teacher",
            str(teacher_file),
            "--teacher-arch",
            "lenet5",
            "--student-arch",
            "lenet5_half",
            "--iterations",
            "40",
            "--hp",
            "generator_width=32",
            "--hp",
            "log_every=5",
            "--device",
            "cpu",
            "--eval-data",
            str(heldout_file),
            "--mte-images",
            "20",
            "--mte-steps",
            "5",
            "--out",
            str(out),
            "--metrics",
            str(metrics),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 40
    assert summary["student_accuracy"] > 0.6  # chance is 0.1; ~0.85 after 40 iterations here
    assert summary["teacher_accuracy"] > 0.95
    assert 0 < summary["mte"] < 1
    load_weights(build("lenet5_half"), read_state_dict(out))
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == list(range(5, 41, 5))
    assert "it/s" in result.stderr or "it]" in result.stderr  # the progress bar


def test_distill_refuses_unknown_hyperparameters(tmp_path: Path, teacher_file: Path) -> None:
    result = subprocess.run(
        [
            DFKD,
            "distill",
            "--teacher",
            str(teacher_file),
            "--teacher-arch",
            "lenet5",
            "--student-arch",
            "lenet5_half",
            "--hp",
            "lr_studnet=1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "lr_studnet" in result.stderr


def test_evaluate_reports_a_network_against_itself_as_identical(
    tmp_path: Path, teacher_file: Path, heldout_file: Path
) -> None:
    plot = tmp_path / "curves.png"
    result = subprocess.run(
        [
            DFKD,
            "evaluate",
            "--teacher",
            str(teacher_file),
            "--teacher-arch",
            "lenet5",
            "--student",
            str(teacher_file),
            "--student-arch",
            "lenet5",
            "--data",
            str(heldout_file),
            "--mte-images",
            "10",
            "--mte-steps",
            "5",
            "--plot",
            str(plot),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    assert numbers["agreement"] == 1.0
    assert numbers["student_accuracy"] == numbers["teacher_accuracy"]
    assert numbers["mte"]["mte"] == 0.0
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_a_method_the_teacher_cannot_serve_is_refused_before_training(
    tmp_path: Path, teacher_file: Path
) -> None:
    """DFQ reads BatchNorm statistics; the LeNet-5 teacher has none."""
    result = subprocess.run(
        [
            DFKD,
            "distill",
            "--teacher",
            str(teacher_file),
            "--teacher-arch",
            "lenet5",
            "--student-arch",
            "lenet5_half",
            "--method",
            "dfq",
            "--iterations",
            "2",
            "--out",
            str(tmp_path / "student.safetensors"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "teacher_has_no_batchnorm: method dfq" in result.stderr
    assert "methods this teacher can run: dafl" in result.stderr
    assert not (tmp_path / "student.safetensors").exists()


def test_distill_takes_an_onnx_teacher_with_no_architecture(tmp_path: Path) -> None:
    from tests import onnx_graphs

    teacher = tmp_path / "teacher.onnx"
    teacher.write_bytes(onnx_graphs.valid())
    out = tmp_path / "student.safetensors"
    result = subprocess.run(
        [
            DFKD,
            "distill",
            "--teacher",
            str(teacher),
            "--student-arch",
            "hinton800",
            "--iterations",
            "3",
            "--batch-size",
            "8",
            "--hp",
            "generator_width=16",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--metrics",
            str(tmp_path / "metrics.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "ONNX teacher converted" in result.stdout
    # the student took the graph's input [1, 8, 8] and its 3 classes
    student = build("hinton800", num_classes=3, in_channels=1, image_size=8)
    load_weights(student, read_state_dict(out))


def test_distill_runs_a_pool_method_on_a_batchnorm_teacher(
    tmp_path: Path, batchnorm_teacher_file: Path, heldout_file: Path
) -> None:
    """The 2020s methods come to the CLI from the registry like the others: FastDFKD on the
    LeNet-5-BN teacher, a student better than chance after a few rounds."""
    out = tmp_path / "student.safetensors"
    result = subprocess.run(
        [
            DFKD,
            "distill",
            "--teacher",
            str(batchnorm_teacher_file),
            "--teacher-arch",
            "lenet5_bn",
            "--student-arch",
            "lenet5_half",
            "--method",
            "fastdfkd",
            "--iterations",
            "20",
            "--batch-size",
            "64",
            "--hp",
            "warmup=2",
            "--hp",
            "student_steps=40",
            "--device",
            "cpu",
            "--eval-data",
            str(heldout_file),
            "--mte-images",
            "0",
            "--out",
            str(out),
            "--metrics",
            str(tmp_path / "metrics.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 20
    assert summary["student_accuracy"] > 0.3, summary  # chance is 0.1
    load_weights(build("lenet5_half"), read_state_dict(out))


def test_distill_runs_dfad_on_a_segmentation_teacher_and_reports_miou(
    tmp_path: Path, segmentation_teacher_file: Path, scenes: tuple[Scenes, Scenes]
) -> None:
    """The task follows from the teacher's per-pixel output; a set of masks evaluates it."""
    heldout = tmp_path / "scenes.npz"
    save_npz(heldout, LabelledImages(scenes[1].images[:100], scenes[1].masks[:100]))
    out = tmp_path / "student.safetensors"
    result = subprocess.run(
        [
            DFKD,
            "distill",
            "--teacher",
            str(segmentation_teacher_file),
            "--teacher-arch",
            "deeplabv3_resnet_mini",
            "--teacher-kwargs",
            '{"in_channels": 1, "width": 8}',
            "--student-arch",
            "deeplabv3_mobilenet_mini",
            "--student-kwargs",
            '{"width": 8}',
            "--method",
            "dfad",
            "--iterations",
            "6",
            "--batch-size",
            "8",
            "--device",
            "cpu",
            "--eval-data",
            str(heldout),
            "--out",
            str(out),
            "--metrics",
            str(tmp_path / "metrics.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 6 and summary["task_type"] == "segmentation"
    assert summary["teacher_miou"] > 0.1 and 0 <= summary["student_miou"] <= 1
    assert summary["images"] == 100
    load_weights(build("deeplabv3_mobilenet_mini", in_channels=1, width=8), read_state_dict(out))
