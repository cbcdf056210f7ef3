"""The service's side of Lopes et al.: reconstruction from a record, then distillation on it."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from core.datasets import LabelledImages, mnist_digits
from core.evaluation import accuracy
from core.loop import distill
from core.metadata import RECORD_TYPES, MetadataError, reading_units, record_metadata
from core.metadata.reconstruction import (
    balanced_classes,
    reconstruct_batch,
    reconstruction_loss,
    sample_targets,
)
from core.method_registry import get_method
from core.methods.lopes import LopesConfig
from core.training import (
    CancelledError,
    DistillationTask,
    DivergedError,
    Progress,
    TrainingHooks,
)
from core.training_supervised import train_classifier

SHAPE = (1, 6, 6)


def mlp(inputs: int, hidden: int, classes: int, seed: int = 0) -> nn.Module:
    """Hinton-style MLP (flatten, two ReLU hidden layers), until the registry's hinton* land."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(inputs, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, classes),
    )


def tiny_task(record: str = "all_layers", stats: str = "diagonal") -> DistillationTask:
    generator = torch.Generator().manual_seed(1)
    data = LabelledImages(torch.randn(200, *SHAPE, generator=generator), torch.arange(200) % 4)
    teacher = mlp(36, 16, 4).eval()
    metadata = record_metadata(teacher, data, record, stats, components=8)
    return DistillationTask(teacher, mlp(36, 8, 4, seed=1), SHAPE, 4, metadata=metadata)


def tiny_config(**overrides: Any) -> LopesConfig:
    values: dict[str, Any] = {
        "samples": 24,
        "reconstruction_batch": 8,
        "reconstruction_steps": 5,
        "iterations": 6,
        "batch_size": 8,
        "log_every": 1,
    }
    return LopesConfig(**{**values, **overrides})


class Recorder(TrainingHooks):
    def __init__(self) -> None:
        self.logs: list[tuple[int, dict[str, float], Progress]] = []
        self.warnings: list[str] = []
        self.checkpoints: dict[int, dict[str, Any]] = {}
        self.samples: dict[int, torch.Tensor] = {}

    def on_log(self, step: int, metrics: dict[str, float], progress: Progress) -> None:
        self.logs.append((step, metrics, progress))

    def on_warning(self, message: str) -> None:
        self.warnings.append(message)

    def on_checkpoint(self, step: int, state: dict[str, Any]) -> None:
        self.checkpoints[step] = copy.deepcopy(state)

    def on_samples(self, step: int, images: torch.Tensor) -> None:
        self.samples[step] = images


def test_registered_under_its_name() -> None:
    assert get_method("lopes").config is LopesConfig
    assert LopesConfig().reconstruction_steps == 1000  # the paper's


@pytest.mark.parametrize("record", RECORD_TYPES)
def test_reconstruction_lowers_its_objective(record: str) -> None:
    task = tiny_task(record, "full")
    metadata = task.metadata
    assert metadata is not None
    classes = balanced_classes(0, 32, metadata)
    assert torch.equal(classes[:8], torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]))
    generator = torch.Generator().manual_seed(0)
    targets = sample_targets(metadata, classes, generator)
    start = torch.randn(32, *SHAPE, generator=generator)
    teacher = task.teacher.requires_grad_(False)
    losses: list[float] = []
    with reading_units(teacher, metadata.layers, metadata.temperature) as read:
        before = reconstruction_loss(metadata, read(start), targets).item()
        found = reconstruct_batch(
            read,
            metadata,
            targets,
            start,
            150,
            0.05,
            lambda _s, loss, _x: losses.append(loss.item()),
        )
        after = reconstruction_loss(metadata, read(found), targets).item()
    assert losses[0] == pytest.approx(before)
    assert after < 0.5 * before, (before, after)
    assert all(p.grad is None for p in teacher.parameters())


def test_the_top_layer_objective_is_the_papers_mse_on_relu_of_tempered_logits() -> None:
    task = tiny_task("top_layer")
    metadata = task.metadata
    assert metadata is not None
    x = torch.randn(5, *SHAPE)
    target = [torch.randn(5, 4)]
    with reading_units(task.teacher, metadata.layers, metadata.temperature) as read:
        loss = reconstruction_loss(metadata, read(x), target)
    expected = (target[0] - torch.relu(task.teacher(x) / 8.0)).pow(2).mean()
    torch.testing.assert_close(loss, expected)


def test_runs_both_phases_and_reports_them() -> None:
    hooks = Recorder()
    hooks.sample_every = 5
    result = distill(tiny_task(), tiny_config(), hooks)
    total = 3 * 5 + 6
    assert [step for step, _, _ in hooks.logs] == list(range(1, total + 1))
    assert result.steps == total and hooks.logs[-1][2].fraction == 1.0
    assert "reconstruction_loss" in hooks.logs[0][1] and "loss_student" not in hooks.logs[0][1]
    last = hooks.logs[-1][1]
    assert {"loss_student", "kl", "pseudo_agreement", "teacher_matches_class"} <= set(last)
    assert last["reconstructed"] == 24
    assert sorted(hooks.samples) == [5, 10, 15, 20]
    assert hooks.samples[5].shape == (8, *SHAPE)  # the batch being reconstructed
    assert hooks.warnings == []


def test_resume_from_checkpoints_reproduces_an_uninterrupted_run() -> None:
    hooks = Recorder()
    hooks.checkpoint_every = 9
    straight = distill(tiny_task(), tiny_config(), hooks)
    # 9: inside the second reconstruction batch (steps 6-10); 18: a student step
    assert sorted(hooks.checkpoints) == [9, 18]
    inside_a_batch = hooks.checkpoints[9]["state"]
    assert inside_a_batch["batches_done"] == 1 and inside_a_batch["images"].shape == (8, *SHAPE)
    assert inside_a_batch["batch_inputs"].shape == (8, *SHAPE)  # the batch under way, kept
    for step in (9, 18):
        resumed_hooks = Recorder()
        resumed = distill(
            tiny_task(), tiny_config(), resumed_hooks, resume_from=hooks.checkpoints[step]
        )
        assert resumed_hooks.logs[0][0] == step + 1
        for name, tensor in straight.student.state_dict().items():
            torch.testing.assert_close(resumed.student.state_dict()[name], tensor)


def test_without_metadata_the_method_says_what_it_needs() -> None:
    task = tiny_task()
    with pytest.raises(MetadataError, match="record-metadata"):
        distill(DistillationTask(task.teacher, task.student, SHAPE, 4), tiny_config())


def test_distilling_into_a_copy_of_the_teacher_is_flagged() -> None:
    task = tiny_task()
    copied = DistillationTask(
        task.teacher, mlp(36, 16, 4, seed=3), SHAPE, 4, metadata=task.metadata
    )
    result = distill(copied, tiny_config())
    assert any("teacher's architecture" in warning for warning in result.warnings)


def test_nan_fails_with_the_step_and_cancel_stops() -> None:
    task = tiny_task()
    with torch.no_grad():
        task.teacher[-1].bias[0] = float("nan")
    with pytest.raises(DivergedError) as raised:
        distill(task, tiny_config())
    assert raised.value.step == 1

    class StopAtSeven(TrainingHooks):
        def should_stop(self, step: int) -> bool:
            return step == 7

    with pytest.raises(CancelledError) as cancelled:
        distill(tiny_task(), tiny_config(), StopAtSeven())
    assert cancelled.value.step == 7


@pytest.fixture(scope="module")
def digits28() -> tuple[LabelledImages, LabelledImages]:
    """The conftest's split (same seed, same order) at 28 px, the MLPs' input size."""
    return mnist_digits(seed=0, image_size=28).split(4000)


def test_student_learns_the_digits_from_the_record_alone(
    digits28: tuple[LabelledImages, LabelledImages],
) -> None:
    """MLP 784-128-128 -> MLP 784-64-64 on real MNIST; the student never sees a real image.

    The teacher (~93% held out) records spectral layer-pair statistics (full covariances of the
    coefficients) on the 4 000 training digits; 400 inputs are reconstructed with 80 Adam steps
    each and the student trains 400 steps on them. Measured while tuning (teacher on 3 500
    digits, scored on the other 500 of the 4 000): 86% in ~17 s. Chance is 10%; 70% leaves room
    for seed and platform noise and fails any pipeline that does not carry the teacher's knowledge.
    """
    train, heldout = digits28
    teacher = train_classifier(mlp(784, 128, 10), train, epochs=4, seed=0)
    teacher_accuracy = accuracy(teacher, heldout.images, heldout.labels)
    metadata = record_metadata(teacher, train, "spectral_layer_pairs", "full")
    task = DistillationTask(teacher, mlp(784, 64, 10, seed=1), (1, 28, 28), 10, metadata=metadata)
    config = LopesConfig(
        samples=400,
        reconstruction_batch=200,
        reconstruction_steps=80,
        iterations=400,
        log_every=100,
    )
    result = distill(task, config)
    student_accuracy = accuracy(result.student, heldout.images, heldout.labels)
    assert teacher_accuracy > 0.9
    print(f"student {student_accuracy:.3f}, teacher {teacher_accuracy:.3f}")
    assert student_accuracy >= 0.70, (student_accuracy, teacher_accuracy)
    assert result.metrics["teacher_matches_class"] > 0.8  # ~0.9: inputs look like their class


def test_batched_reconstruction_gives_the_inputs_each_would_get_alone() -> None:
    """The step takes the sum of per-input losses, so Adam moves each input as if it were alone
    (with the batch mean, epsilon against 32x smaller gradients moved them 3-4% away)."""
    task = tiny_task("all_layers", "full")
    metadata = task.metadata
    assert metadata is not None
    classes = balanced_classes(0, 32, metadata)
    generator = torch.Generator().manual_seed(0)
    targets = sample_targets(metadata, classes, generator)
    start = torch.randn(32, *SHAPE, generator=generator)
    teacher = task.teacher.requires_grad_(False)
    with reading_units(teacher, metadata.layers, metadata.temperature) as read:
        together = reconstruct_batch(read, metadata, targets, start, 100, 0.05)
        alone = torch.cat(
            [
                reconstruct_batch(
                    read, metadata, [t[i : i + 1] for t in targets], start[i : i + 1], 100, 0.05
                )
                for i in range(len(start))
            ]
        )
    moved = (together - start).abs().max().item()
    assert moved > 0.1, "the inputs barely moved: the test proves nothing"
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)
