"""Segmentation in the core (issue 15): mIoU by hand, the digit scenes, the DeepLabV3 pair,
DFAD's per-pixel losses and resume, the mask sets, per-pixel forward checks, ONNX and
torchvision segmentation networks, and the three-panel grids."""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from core.dataset_scan import scan_labelled
from core.datasets import DatasetFormatError, read_labelled
from core.digit_scenes import IGNORE_INDEX, RIM, SCENE_CLASSES, STROKE, digit_scenes, mnist_scenes
from core.export import check_onnx, onnx_bytes
from core.images import palette, segmentation_grid
from core.loop import distill
from core.losses import information_entropy_loss, kl_divergence
from core.method_registry import TeacherFacts, get_method
from core.methods.dfad import (
    DFADConfig,
    discrepancy_of,
    generator_objective,
    l1_discrepancy,
)
from core.models import build, get_spec, planned_parameters
from core.onnx_teacher import check_onnx_teacher
from core.segmentation import SegmentationScores, confusion_matrix, segmentation_scores
from core.training import DistillationTask, TrainingHooks
from core.weights import WeightsError, check_forward

pytestmark = pytest.mark.usefixtures("one_thread")


def test_miou_sums_intersections_and_unions_over_the_whole_set_before_dividing() -> None:
    # two images; class 2 is only in the first, class 1 only predicted in the second
    truth = torch.tensor([[[0, 0, 2, 2]], [[0, 0, 0, 255]]])
    predicted = torch.tensor([[[0, 2, 2, 2]], [[0, 1, 0, 1]]])
    confusion = confusion_matrix(predicted, truth, 4)
    assert confusion.sum() == 7  # the ignored pixel counts for nothing
    scores = SegmentationScores.from_confusion(confusion)
    # class 0: 3 right of 5 true and 3 predicted -> 3 / 5; class 1: predicted once, never
    # true -> 0 / 1; class 2: 2 right of 2 true and 3 predicted -> 2 / 3; class 3: neither
    # true nor predicted -> not counted
    assert scores.per_class_iou == pytest.approx([3 / 5, 0.0, 2 / 3, None])
    assert scores.mean_iou == pytest.approx((3 / 5 + 0 + 2 / 3) / 3)
    assert scores.pixel_accuracy == pytest.approx(5 / 7)
    # per-image averaging would differ: the first image alone scores (1/2 + 2/3) / 2
    first = SegmentationScores.from_confusion(confusion_matrix(predicted[:1], truth[:1], 4))
    assert first.mean_iou == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_masks_with_classes_past_the_count_are_an_error() -> None:
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        confusion_matrix(torch.zeros(1, 2, 2), torch.full((1, 2, 2), 3), 3)


def test_scenes_label_each_stroke_with_its_digit_and_ignore_the_rims() -> None:
    digits = np.zeros((2, 28, 28), np.uint8)
    digits[0, 10:18, 10:18] = 255  # a solid block, "3"
    digits[0, 9, 10:18] = int(0.3 * 255)  # a soft rim above it
    digits[1, 5:8, 5:8] = 200  # "7"
    scenes = digit_scenes(digits, np.array([3, 7]), count=6, canvas=64, fill=1.0, seed=1)
    assert scenes.images.shape == (6, 1, 64, 64) and scenes.masks.shape == (6, 64, 64)
    pixels = torch.from_numpy(scenes.pixels()[:, 0]).float() / 255
    strokes = pixels >= STROKE
    assert set(scenes.masks[strokes].unique().tolist()) <= {4, 8}  # digit d is class d + 1
    assert (scenes.masks[(pixels >= RIM + 0.02) & (pixels < STROKE - 0.02)] == IGNORE_INDEX).all()
    assert (scenes.masks[pixels == 0] == 0).all()
    # four digits a scene at fill 1, none overlapping: each scene has 4 labelled blocks
    assert int((scenes.masks == 4).sum() + (scenes.masks == 8).sum()) > 0


def test_held_out_scenes_are_built_from_digits_training_never_saw() -> None:
    train, heldout = mnist_scenes(20, 20, seed=0)
    assert train.masks.max() <= 10 or IGNORE_INDEX in train.masks.unique().tolist()
    assert not torch.equal(train.images[:5], heldout.images[:5])
    labelled = train.masks[train.masks != IGNORE_INDEX]
    assert labelled.max() < SCENE_CLASSES and labelled.min() >= 0


def test_the_pair_gives_per_pixel_logits_and_the_student_is_a_quarter_of_the_teacher() -> None:
    teacher_spec, student_spec = (
        get_spec("deeplabv3_resnet_mini"),
        get_spec("deeplabv3_mobilenet_mini"),
    )
    assert teacher_spec.task == student_spec.task == "segmentation"
    assert get_spec("resnet8").task == "classification"
    for name in ("deeplabv3_resnet_mini", "deeplabv3_mobilenet_mini"):
        model = build(name, num_classes=5, in_channels=3, image_size=48).eval()
        assert model(torch.randn(2, 3, 48, 40)).shape == (2, 5, 48, 40)
        model(torch.randn(1, 3, 48, 48))  # one input: no BatchNorm over a batch of one
    ratio = planned_parameters("deeplabv3_mobilenet_mini") / planned_parameters(
        "deeplabv3_resnet_mini"
    )
    assert 0.2 < ratio < 0.35, ratio


def test_dfad_on_per_pixel_logits_uses_l1_and_minus_log_l1_plus_one() -> None:
    student, teacher = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    l1 = l1_discrepancy(student, teacher)
    assert float(l1) == pytest.approx(float((student - teacher).abs().mean()))
    assert float(generator_objective(l1, "segmentation")) == pytest.approx(-np.log1p(float(l1)))
    assert float(generator_objective(l1, "classification")) == pytest.approx(-float(l1))
    # the KL metric is per pixel: the mean over pixels of each pixel's KL
    per_pixel = (
        F.softmax(teacher, 1) * (F.log_softmax(teacher, 1) - F.log_softmax(student, 1))
    ).sum(1)
    assert float(kl_divergence(teacher, student)) == pytest.approx(float(per_pixel.mean()), 1e-5)
    spec = get_method("dfad")
    facts = TeacherFacts(11, (1, 64, 64), task_type="segmentation")
    assert spec.unmet_requirement(facts) is None
    code, message = get_method("zskt").unmet_requirement(facts)
    assert code == "unsupported_task_type" and "dfad" in message


class Recorder(TrainingHooks):
    def __init__(self) -> None:
        self.checkpoints: dict[int, dict[str, Any]] = {}
        self.samples: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def on_checkpoint(self, step: int, state: dict[str, Any]) -> None:
        self.checkpoints[step] = copy.deepcopy(state)

    def on_samples(
        self, step: int, images: torch.Tensor, masks: torch.Tensor | None = None
    ) -> None:
        self.samples.append((images, masks))


def segmentation_task() -> DistillationTask:
    torch.manual_seed(0)
    return DistillationTask(
        build("deeplabv3_resnet_mini", in_channels=1, image_size=32, width=4),
        build("deeplabv3_mobilenet_mini", in_channels=1, image_size=32, width=4),
        (1, 32, 32),
        11,
        task_type="segmentation",
    )


def test_a_segmentation_run_resumes_bit_for_bit_and_samples_with_both_masks() -> None:
    config = DFADConfig(
        iterations=4, batch_size=4, generator_width=0.0625, student_steps=2, seed=2, log_every=2
    )
    hooks = Recorder()
    hooks.checkpoint_every, hooks.sample_every = 2, 2
    straight = distill(segmentation_task(), config, hooks)
    images, masks = hooks.samples[-1]
    assert masks is not None and masks.shape == (2, len(images), 32, 32)
    assert masks.dtype == torch.int64 and masks.max() < 11

    resumed = distill(segmentation_task(), config, Recorder(), resume_from=hooks.checkpoints[2])
    for name, tensor in straight.student.state_dict().items():
        assert torch.equal(resumed.student.state_dict()[name], tensor), name


def test_the_forward_check_wants_per_pixel_logits_at_the_input_size() -> None:
    model = build("deeplabv3_mobilenet_mini", in_channels=1, image_size=32, width=4)
    check_forward(model, (1, 32, 32), 11, "segmentation")
    with pytest.raises(WeightsError, match=r"expected \[2, 11\] \(batch, classes\)"):
        check_forward(model, (1, 32, 32), 11)
    with pytest.raises(WeightsError, match=r"expected \[2, 7, 32, 32\]"):
        check_forward(model, (1, 32, 32), 7, "segmentation")


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez_compressed(path, **arrays)
    return path


def test_mask_sets_read_whole_and_scanned_in_chunks_agree(tmp_path: Path) -> None:
    masks = np.random.default_rng(0).integers(0, 4, (5, 8, 8)).astype(np.uint8)
    masks[:, 0] = 255
    path = write_npz(tmp_path / "m.npz", images=np.zeros((5, 8, 8), np.uint8), masks=masks)
    whole, scanned = read_labelled(path), scan_labelled(path)
    assert whole.task_type == scanned.task_type == "segmentation"
    assert whole.class_counts() == scanned.class_counts
    assert 255 not in scanned.class_counts and sum(scanned.class_counts.values()) == 5 * 7 * 8
    assert whole.prepared().labels.shape == (5, 8, 8)
    bad = write_npz(
        tmp_path / "b.npz", images=np.zeros((5, 8, 8)), masks=masks.astype(np.int32) + 300
    )
    for reader in (read_labelled, scan_labelled):
        with pytest.raises(DatasetFormatError, match="class indices 0-254"):
            reader(bad)


def test_an_onnx_segmentation_graph_is_a_segmentation_teacher(tmp_path: Path) -> None:
    model = build("deeplabv3_mobilenet_mini", in_channels=1, image_size=32, width=4).eval()
    data = onnx_bytes(model, (1, 32, 32))
    assert check_onnx(model, data, (1, 32, 32)) < 1e-4
    path = tmp_path / "seg.onnx"
    path.write_bytes(data)
    facts, difference = check_onnx_teacher(path)
    assert facts.task_type == "segmentation" and facts.num_classes == 11
    assert facts.input_shape == (1, 32, 32) and difference < 1e-4


def test_torchvision_segmentation_networks_give_their_logits_tensor() -> None:
    spec = get_spec("torchvision:lraspp_mobilenet_v3_large")
    assert spec.task == "segmentation" and spec.num_classes(num_classes=5) == 5
    assert get_spec("torchvision:resnet18").task == "classification"
    model = build("torchvision:lraspp_mobilenet_v3_large", num_classes=5).eval()
    logits = model(torch.randn(1, 3, 64, 64))
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, 5, 64, 64)
    assert any(key.startswith("backbone.") for key in model.state_dict())  # torchvision's keys


def test_palette_colours_are_fixed_distinct_and_grids_show_three_panels() -> None:
    assert palette(3).tolist() == palette(20)[:3].tolist()  # a class keeps its colour
    assert palette(1).tolist() == [[0, 0, 0]]
    assert len({tuple(colour) for colour in palette(21).tolist()}) == 21
    images = torch.randn(4, 1, 16, 16)
    masks = torch.randint(0, 5, (4, 16, 16))
    grid = Image.open(io.BytesIO(segmentation_grid(images, masks, torch.zeros_like(masks))))
    assert grid.mode == "RGB"
    # 2 x 2 cells of 48 x 16 (input, teacher, student) with 4 px padding
    assert grid.size == (4 + 2 * (48 + 4), 4 + 2 * (16 + 4))
    pixels = np.asarray(grid)
    assert tuple(pixels[4 + 0, 4 + 32]) == (0, 0, 0)  # the student panel: all background
    teacher_panel = pixels[4 : 4 + 16, 4 + 16 : 4 + 32].reshape(-1, 3)
    expected = palette(5)[masks[0].flatten()].numpy()
    assert (teacher_panel == expected).all()


def test_segmentation_scores_of_a_perfect_network_are_one() -> None:
    class Oracle(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.one_hot(x[:, 0].long(), 3).permute(0, 3, 1, 2).float() * self.scale

    masks = torch.randint(0, 3, (4, 6, 6))
    scores = segmentation_scores(Oracle(), masks[:, None].float(), masks, 3)
    assert scores.mean_iou == 1.0 and scores.pixel_accuracy == 1.0


def test_the_cpu_options_kl_class_balance_and_adam_change_only_what_they_name() -> None:
    student, teacher = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert float(discrepancy_of(student, teacher, "segmentation", "kl")) == pytest.approx(
        float(kl_divergence(teacher, student))
    )
    assert torch.equal(
        discrepancy_of(student, teacher, "segmentation", "l1"), l1_discrepancy(student, teacher)
    )
    # a classifier ignores the segmentation-only loss: the same student either way (any fixed
    # teacher shows it; the session's trained one is left to be built where its tests want it)
    torch.manual_seed(0)
    teacher = build("lenet5")
    students = []
    for loss in ("l1", "kl"):
        torch.manual_seed(0)
        task = DistillationTask(teacher, build("lenet5_half"), (1, 32, 32), 10)
        config = DFADConfig(
            iterations=2, batch_size=8, generator_width=0.0625, segmentation_loss=loss, seed=1
        )
        students.append(distill(task, config).student.state_dict())
    assert all(torch.equal(students[0][k], students[1][k]) for k in students[0])

    uniform = torch.zeros(2, 4, 3, 3)
    assert float(-information_entropy_loss(uniform)) == pytest.approx(np.log(4))
    one_class = torch.full((2, 4, 3, 3), -30.0)
    one_class[:, 2] = 30
    assert float(-information_entropy_loss(one_class)) == pytest.approx(0, abs=1e-6)


def test_a_segmentation_run_with_the_cpu_settings_trains_with_adam_and_reports_l1() -> None:
    config = DFADConfig(
        iterations=2,
        batch_size=4,
        generator_width=0.0625,
        student_steps=2,
        segmentation_loss="kl",
        student_optimizer="adam",
        lr_student=0.01,
        weight_decay=0.0,
        class_balance=3.0,
        log_every=1,
    )
    logs: list[dict[str, float]] = []

    class Logs(TrainingHooks):
        def on_log(self, step: int, metrics: dict[str, float], progress: Any) -> None:
            logs.append(metrics)

    task = segmentation_task()
    before = {k: v.clone() for k, v in task.student.state_dict().items()}
    result = distill(task, config, Logs())
    assert any(not torch.equal(before[k], v) for k, v in result.student.state_dict().items())
    # `l1` stays the L1 between logits while the student learns from the KL
    assert all(metrics["l1"] > 0 and np.isfinite(metrics["loss_generator"]) for metrics in logs)
    assert logs[-1]["l1"] != pytest.approx(logs[-1]["loss_student"])
