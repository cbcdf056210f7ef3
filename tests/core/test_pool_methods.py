"""The pool methods of issue 13 (DeepInversion with ADI, CMI, FastDFKD) in core: registered with
their requirement, resumable bit-exact with the pool and every synthesis state, the pool's
logits the teacher's, each loss term reported."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from core.batchnorm import BatchNormStatistics
from core.hyperparameters import MethodConfig
from core.loop import distill
from core.method_registry import BATCHNORM_STATISTICS, get_method
from core.methods.fastdfkd import paper_learning_rates
from core.models import build
from core.training import DistillationTask, Progress, TrainingHooks

POOL_METHODS = ("deepinversion", "cmi", "fastdfkd")

# a few inputs and steps: the mechanics are under test, not the student's accuracy
TINY: dict[str, dict[str, Any]] = {
    "deepinversion": {"synthesis_steps": 3, "competition": 1.0, "flip": True},
    "cmi": {"synthesis_steps": 3, "bank_size": 20, "generator_width": 8},
    "fastdfkd": {"g_steps": 2, "generator_width": 8, "meta": "reptile"},
}
LOSS_TERMS = {
    "deepinversion": {"loss_one_hot", "loss_bn", "loss_tv_l2", "loss_competition"},
    "cmi": {"loss_one_hot", "loss_bn", "loss_adversarial", "loss_contrast"},
    "fastdfkd": {"loss_one_hot", "loss_bn", "loss_adversarial"},
}


pytestmark = pytest.mark.usefixtures("one_thread")


class Recorder(TrainingHooks):
    def __init__(self) -> None:
        self.logs: list[tuple[int, dict[str, float]]] = []
        self.checkpoints: dict[int, dict[str, Any]] = {}

    def on_log(self, step: int, metrics: dict[str, float], progress: Progress) -> None:
        self.logs.append((step, metrics))

    def on_checkpoint(self, step: int, state: dict[str, Any]) -> None:
        self.checkpoints[step] = copy.deepcopy(state)


def tiny(method: str, **overrides: Any) -> MethodConfig:
    values = {
        "iterations": 4,
        "batch_size": 8,
        "student_steps": 2,
        "warmup": 1,
        "pool_size": 24,
        "log_every": 1,
        **TINY[method],
        **overrides,
    }
    run = {
        name: values.pop(name) for name in ("iterations", "batch_size", "seed") if name in values
    }
    return get_method(method).build_config(values, **run)


def task(teacher: nn.Module) -> DistillationTask:
    return DistillationTask(copy.deepcopy(teacher), build("lenet5_half"), (1, 32, 32), 10)


@pytest.mark.parametrize("method", POOL_METHODS)
def test_registered_with_the_batchnorm_requirement(method: str) -> None:
    spec = get_method(method)
    assert BATCHNORM_STATISTICS in spec.requirements
    names = {info.name for info in spec.hyperparameters()}
    assert {"bn", "one_hot", "pool_size", "student_steps", "temperature"} <= names


def test_the_issue_names_the_knobs_it_promised() -> None:
    assert "competition" in {info.name for info in get_method("deepinversion").hyperparameters()}
    fast = {info.name: info for info in get_method("fastdfkd").hyperparameters()}
    assert fast["meta"].choices == ("maml", "reptile") and fast["g_steps"].default == 2
    assert paper_learning_rates(2) == (0.015, 5e-3) and paper_learning_rates(10) == (0.01, 2e-3)
    config = get_method("fastdfkd").build_config({"g_steps": 5}, iterations=1)
    effective = config.effective(10, (1, 32, 32))
    assert (effective.lr_z, effective.lr_generator) == (0.01, 3e-3)
    assert effective.flip is False  # digits are not mirror-symmetric
    assert config.effective(10, (3, 32, 32)).flip is True


@pytest.mark.parametrize("method", POOL_METHODS)
def test_a_run_fills_a_bounded_pool_with_the_teachers_logits_and_reports_each_term(
    method: str, batchnorm_teacher: nn.Module
) -> None:
    hooks = Recorder()
    result = distill(task(batchnorm_teacher), tiny(method), hooks)
    metrics = dict(hooks.logs[-1][1])
    assert LOSS_TERMS[method] <= set(metrics), sorted(metrics)
    assert metrics["pool_size"] == 24  # 4 rounds of 8, bounded to 24
    assert "loss_student" not in hooks.logs[0][1]  # the warm-up round only synthesises
    assert "loss_student" in metrics and "pool_agreement" in metrics
    assert result.synthetic is not None
    images, logits = result.synthetic
    assert images.shape == (24, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(batchnorm_teacher(images), logits)


@pytest.mark.parametrize("method", POOL_METHODS)
def test_resume_from_a_checkpoint_reproduces_an_uninterrupted_run(
    method: str, batchnorm_teacher: nn.Module
) -> None:
    config = tiny(method, seed=5)
    hooks = Recorder()
    hooks.checkpoint_every = 2
    straight = distill(task(batchnorm_teacher), config, hooks)
    assert hooks.checkpoints[2]["method"] == method

    resumed = distill(task(batchnorm_teacher), config, resume_from=hooks.checkpoints[2])
    for name, tensor in straight.student.state_dict().items():
        assert torch.equal(resumed.student.state_dict()[name], tensor), name
    assert straight.synthetic is not None and resumed.synthetic is not None
    assert torch.equal(straight.synthetic[0], resumed.synthetic[0])


def test_fastdfkd_maml_moves_the_shared_generator(batchnorm_teacher: nn.Module) -> None:
    from core.methods.fastdfkd import FastDFKD

    generators: list[dict[str, torch.Tensor]] = []
    original = FastDFKD.synthesise

    def recording(self: FastDFKD, step: int, fraction: float) -> torch.Tensor:
        generators.append(copy.deepcopy(self.generator.state_dict()))
        return original(self, step, fraction)

    FastDFKD.synthesise = recording  # type: ignore[method-assign]
    try:
        distill(task(batchnorm_teacher), tiny("fastdfkd", meta="maml", iterations=2))
    finally:
        FastDFKD.synthesise = original  # type: ignore[method-assign]
    first, second = generators
    moved = [name for name in first if not torch.equal(first[name], second[name])]
    assert "project.weight" in moved


def test_the_statistics_blend_earlier_batches_with_momentum() -> None:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3)).eval()
    statistics = BatchNormStatistics(network, momentum=0.75)
    first, second = torch.randn(4, 1, 6, 6), torch.randn(4, 1, 6, 6) + 1
    network(first)
    statistics.update_momentum()
    kept = statistics.state_dict()
    network(second)
    features = network[0](second).detach()
    mean = 0.75 * kept["means"][0] + 0.25 * features.mean((0, 2, 3))
    variance = 0.75 * kept["variances"][0] + 0.25 * features.var((0, 2, 3), unbiased=False)
    expected = (mean - network[1].running_mean).norm() + (variance - network[1].running_var).norm()
    torch.testing.assert_close(statistics.loss(), expected)
    assert statistics.instance_means().shape == (4, 3)
    torch.testing.assert_close(statistics.instance_means(), features.mean((2, 3)))
    statistics.close()
