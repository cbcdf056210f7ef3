"""DFQ (core/methods/dfq.py): the requirement, the adversary, the losses, resume."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from core.batchnorm import BatchNormStatistics
from core.loop import distill
from core.method_registry import BATCHNORM_STATISTICS, TeacherFacts, get_method
from core.methods.dfq import DFQ, DFQConfig
from core.models import build
from core.training import DistillationTask, Progress, TrainingHooks

TERMS = ("loss_bn", "loss_one_hot", "loss_balance", "loss_adversarial")


pytestmark = pytest.mark.usefixtures("one_thread")


class Recorder(TrainingHooks):
    def __init__(self) -> None:
        self.logs: list[tuple[int, dict[str, float]]] = []
        self.checkpoints: dict[int, dict[str, Any]] = {}

    def on_log(self, step: int, metrics: dict[str, float], progress: Progress) -> None:
        self.logs.append((step, metrics))

    def on_checkpoint(self, step: int, state: dict[str, Any]) -> None:
        self.checkpoints[step] = copy.deepcopy(state)


def task(teacher: nn.Module, student: nn.Module | None = None) -> DistillationTask:
    return DistillationTask(teacher, student or build("lenet5_half"), (1, 32, 32), 10)


def small(**overrides: Any) -> DFQConfig:
    values: dict[str, Any] = {
        "iterations": 3,
        "batch_size": 8,
        "generator_width": 0.0625,
        "student_steps": 2,
        "log_every": 1,
    }
    return DFQConfig(**{**values, **overrides})


def test_registered_with_the_batchnorm_requirement() -> None:
    spec = get_method("dfq")
    assert spec.run is DFQ and spec.config is DFQConfig
    assert spec.requirements == (BATCHNORM_STATISTICS,)
    lenet = TeacherFacts(10, (1, 32, 32), count_batchnorm=lambda: 0)
    code, message = spec.unmet_requirement(lenet) or ("", "")
    assert code == "teacher_has_no_batchnorm"
    assert message.startswith("method dfq ") and "dafl" in message and "dfq," not in message
    assert spec.unmet_requirement(TeacherFacts(10, (1, 32, 32), count_batchnorm=lambda: 7)) is None


def test_defaults_are_fast_datafrees_on_a_gpu() -> None:
    gpu = DFQConfig(device="cuda").effective(10, (3, 32, 32))
    assert (gpu.bn, gpu.one_hot, gpu.adv, gpu.balance) == (1, 1, 1, 20)
    assert (gpu.student_steps, gpu.temperature, gpu.lr_student, gpu.lr_generator) == (
        10,
        20,
        0.1,
        1e-3,
    )
    assert (gpu.generator_width, gpu.batch_size, gpu.z_dim, gpu.iterations) == (1, 256, 256, 8000)


def test_every_loss_term_is_logged_and_the_generator_loss_is_their_weighted_sum(
    batchnorm_teacher: nn.Module,
) -> None:
    hooks = Recorder()
    weights = {"bn": 0.5, "one_hot": 2.0, "balance": 3.0, "adv": 1.5}
    distill(task(batchnorm_teacher), small(**weights), hooks)
    for _, metrics in hooks.logs:
        assert {*TERMS, "loss_generator", "loss_student", "fresh_agreement", "lr_student"} <= set(
            metrics
        )
        weighted = (
            0.5 * metrics["loss_bn"]
            + 2.0 * metrics["loss_one_hot"]
            + 3.0 * metrics["loss_balance"]
            + 1.5 * metrics["loss_adversarial"]
        )
        assert metrics["loss_generator"] == pytest.approx(weighted, rel=1e-5)
        assert metrics["loss_bn"] > 0


def test_the_adversary_is_the_real_student(batchnorm_teacher: nn.Module) -> None:
    """Fast-Datafree's driver gave its generative baselines the teacher as the student, so the
    disagreement term was KL(T || T) = 0 (its issue #11). Here it is KL(T || S) of the student."""
    hooks = Recorder()
    distill(task(batchnorm_teacher), small(iterations=1), hooks)
    assert hooks.logs[-1][1]["loss_adversarial"] < -1e-3


def test_only_the_generator_moves_in_its_step_and_the_teacher_never(
    batchnorm_teacher: nn.Module,
) -> None:
    """With no student steps, the student and the teacher (weights and running statistics)
    end as they began, while the generator moved and the BatchNorm loss read the teacher."""
    teacher = copy.deepcopy(batchnorm_teacher)
    student = build("lenet5_half")
    before_student = copy.deepcopy(student.state_dict())
    before_teacher = copy.deepcopy(teacher.state_dict())
    hooks = Recorder()
    hooks.checkpoint_every = 2
    distill(task(teacher, student), small(iterations=2, student_steps=1, lr_student=1e-12), hooks)
    for name, value in before_teacher.items():
        assert torch.equal(teacher.state_dict()[name], value), name
    moved = [
        name
        for name, value in before_student.items()
        if not torch.allclose(student.state_dict()[name], value, atol=1e-9)
    ]
    assert moved == []
    assert all(torch.isfinite(v).all() for v in hooks.checkpoints[2]["state"]["generator"].values())


def test_the_hooks_are_removed_when_the_run_ends(batchnorm_teacher: nn.Module) -> None:
    teacher = copy.deepcopy(batchnorm_teacher)
    distill(task(teacher), small(iterations=1))
    statistics = BatchNormStatistics(teacher)
    assert all(len(layer._forward_hooks) == 1 for layer in statistics.layers)
    statistics.close()


def test_resume_from_a_checkpoint_equals_the_uninterrupted_run_bit_for_bit(
    batchnorm_teacher: nn.Module,
) -> None:
    config = small(iterations=6, seed=3)
    hooks = Recorder()
    hooks.checkpoint_every = 3
    straight = distill(task(batchnorm_teacher), config, hooks)
    assert hooks.checkpoints[3]["method"] == "dfq"

    resumed_hooks = Recorder()
    resumed_hooks.checkpoint_every = 3
    resumed = distill(
        task(batchnorm_teacher), config, resumed_hooks, resume_from=hooks.checkpoints[3]
    )
    assert [step for step, _ in resumed_hooks.logs] == [4, 5, 6]
    for name, tensor in straight.student.state_dict().items():
        assert torch.equal(resumed.student.state_dict()[name], tensor), name
    for part in ("generator", "optimizer_generator", "optimizer_student", "fresh_draws"):
        assert str(resumed_hooks.checkpoints[6]["state"][part]) == str(
            hooks.checkpoints[6]["state"][part]
        ), part
    assert resumed_hooks.logs[-1][1] == hooks.logs[-1][1]
