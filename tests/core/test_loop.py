"""The shared loop: time budgets, schedules on the fraction of the run, the checkpoint layout."""

from __future__ import annotations

import time
from typing import Any

import pytest

from core.loop import CHECKPOINT_LAYOUT, BudgetTooSmallError, distill
from core.methods.dfad import DFADConfig
from core.methods.zskt import ZSKTConfig
from core.schedules import cosine, step_decay
from tests.core.test_dfad import Recorder as DFADRecorder
from tests.core.test_lopes import tiny_config, tiny_task
from tests.core.test_utilisation import lenet_task


class Recorder(DFADRecorder):
    def __init__(self, checkpoint_every: int = 0) -> None:
        super().__init__()
        self.checkpoint_every = checkpoint_every


def small_dfad(**values: Any) -> DFADConfig:
    return DFADConfig(
        **{"batch_size": 16, "student_steps": 1, "generator_width": 0.25, "log_every": 1} | values
    )


def test_schedules_are_functions_of_the_fraction_done() -> None:
    assert cosine(0.0) == 1.0 and cosine(1.0) == pytest.approx(0.0)
    assert cosine(0.5) == pytest.approx(0.5) and cosine(2.0) == pytest.approx(0.0)
    assert [step_decay(f, (0.4, 0.8), 0.1) for f in (0.0, 0.39, 0.4, 0.8)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.01]
    )


def test_a_budget_ends_the_run_and_the_schedule_follows_it() -> None:
    hooks = Recorder()
    began = time.perf_counter()
    result = distill(lenet_task(), small_dfad(iterations=None, budget_seconds=3.0), hooks)
    wall = time.perf_counter() - began
    assert 3.0 <= wall < 6.0 and result.steps == hooks.logs[-1][0] > 3
    last = hooks.logs[-1][2]
    assert last.total is None and last.fraction == 1.0 and last.eta_seconds == 0.0
    # the learning rate dropped x0.1 at 40% and at 80% of the budget's seconds
    rates = [metrics["lr_student"] for _, metrics, _ in hooks.logs]
    assert rates[0] == pytest.approx(0.01) and rates[-1] == pytest.approx(1e-4)
    dropped_at = next(p.elapsed_seconds for _, m, p in hooks.logs if m["lr_student"] < 0.01)
    assert 1.1 < dropped_at < 1.9


def test_iterations_and_a_budget_end_at_whichever_comes_first() -> None:
    assert distill(lenet_task(), small_dfad(iterations=3, budget_seconds=60.0)).steps == 3
    hooks = Recorder()
    result = distill(lenet_task(), small_dfad(iterations=100_000, budget_seconds=1.5), hooks)
    assert result.steps < 100_000 and hooks.logs[-1][2].fraction == 1.0


def test_a_resumed_budget_run_keeps_the_time_it_spent() -> None:
    hooks = Recorder(checkpoint_every=5)
    distill(lenet_task(), small_dfad(iterations=None, budget_seconds=3.0), hooks)
    # the last checkpoint taken inside the budget (one taken at its very end has none left)
    step, checkpoint = max(
        (step, state) for step, state in hooks.checkpoints.items() if state["elapsed_seconds"] < 3.0
    )
    spent = checkpoint["elapsed_seconds"]
    assert checkpoint["layout"] == CHECKPOINT_LAYOUT and 0 < spent < 3.0
    resumed_hooks = Recorder()
    began = time.perf_counter()
    distill(
        lenet_task(),
        small_dfad(iterations=None, budget_seconds=3.0),
        resumed_hooks,
        resume_from=checkpoint,
    )
    wall = time.perf_counter() - began
    assert resumed_hooks.logs[0][0] == step + 1
    assert resumed_hooks.logs[0][2].elapsed_seconds >= spent
    assert wall < 3.0 - spent + 1.5  # the rest of the budget, not a new one


def test_the_checkpoint_layout_is_one_for_every_method() -> None:
    layouts = []
    for config in (
        ZSKTConfig(iterations=2, batch_size=16, student_steps=1, generator_width=8),
        small_dfad(iterations=2),
        tiny_config(samples=8, reconstruction_steps=1, iterations=1),
    ):
        hooks = Recorder(checkpoint_every=1)
        task = tiny_task() if config.__class__.__name__ == "LopesConfig" else lenet_task()
        distill(task, config, hooks)
        layouts.append(sorted(hooks.checkpoints[1]))
    assert layouts[0] == layouts[1] == layouts[2]
    assert {"layout", "method", "step", "elapsed_seconds", "student", "state", "rng"} <= set(
        layouts[0]
    )


def test_a_budget_spent_before_the_student_learns_is_an_error() -> None:
    with pytest.raises(BudgetTooSmallError, match="budget_seconds"):
        distill(
            tiny_task(),
            tiny_config(
                samples=64, reconstruction_steps=100_000, iterations=None, budget_seconds=0.5
            ),
        )
