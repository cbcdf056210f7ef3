"""What every method's loop shares: progress, hooks into the caller, errors, determinism."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from core.utilisation import FlopMeter, rss_bytes

if TYPE_CHECKING:
    from core.metadata import Metadata


class DivergedError(RuntimeError):
    """A loss became NaN or infinite; training cannot recover from that on its own."""

    def __init__(self, step: int, name: str, value: float) -> None:
        super().__init__(
            f"{name} became {value} at step {step}; lower the learning rates or the batch size"
        )
        self.step = step


class CancelledError(RuntimeError):
    """The caller asked the loop to stop."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped at step {step} on request")
        self.step = step


def run_fraction(
    done: int, total: int | None, elapsed: float, budget: float | None, unknown: float = 1.0
) -> float:
    """The fraction of a run done: of its steps or of its budget's seconds, whichever is further
    along, at most 1; `unknown` when it has neither."""
    parts = [done / total] if total else []
    if budget:
        parts.append(elapsed / budget)
    return min(1.0, max(parts)) if parts else unknown


@dataclass(frozen=True)
class Progress:
    step: int  # iterations completed
    total: int | None  # None: the time budget alone decides the end
    samples_per_second: float  # pseudo inputs drawn per second, over the last log interval
    elapsed_seconds: float  # training time so far, earlier attempts included
    # matmul/conv FLOPs per second over the last log interval (None where the loop does not count)
    flops_per_second: float | None = None
    rss_bytes: int | None = None  # the process's resident memory at this log point
    budget_seconds: float | None = None

    @property
    def fraction(self) -> float:
        """Of iterations or of the budget, whichever is further along (the run ends at 1)."""
        return run_fraction(self.step, self.total, self.elapsed_seconds, self.budget_seconds)

    @property
    def eta_seconds(self) -> float | None:
        estimates = []
        if self.total and self.step and self.elapsed_seconds > 0:
            estimates.append(self.elapsed_seconds / self.step * (self.total - self.step))
        if self.budget_seconds:
            estimates.append(max(0.0, self.budget_seconds - self.elapsed_seconds))
        return min(estimates) if estimates else None


class TrainingHooks:
    """The caller's side of a training loop. Override what you need; the defaults do nothing."""

    checkpoint_every: int = 0  # iterations between checkpoints; 0 means never
    sample_every: int = 0  # iterations between generator sample batches; 0 means never

    def on_log(self, step: int, metrics: dict[str, float], progress: Progress) -> None:
        """Called every `log_every` iterations and at the end, with the latest metrics."""

    def on_warning(self, message: str) -> None:
        """Called when the method changes course for a reason the user should hear about."""

    def should_stop(self, step: int) -> bool:
        """Polled every few iterations; True stops the loop with CancelledError."""
        return False

    def on_checkpoint(self, step: int, state: dict[str, Any]) -> None:
        """Receives the full training state every `checkpoint_every` iterations."""

    def on_samples(
        self, step: int, images: torch.Tensor, masks: torch.Tensor | None = None
    ) -> None:
        """Receives pseudo inputs [N, C, H, W] (teacher-normalised) every `sample_every`
        iterations; for a segmentation task also `masks` [2, N, H, W], the teacher's and the
        student's predicted classes per pixel on them."""


@dataclass(frozen=True)
class DistillationTask:
    """A teacher, a student, and what the loop must know about them."""

    teacher: nn.Module
    student: nn.Module
    input_shape: tuple[int, int, int]
    num_classes: int
    teacher_taps: tuple[str, ...] = ()
    student_taps: tuple[str, ...] = ()
    metadata: Metadata | None = None  # the owner's activation record, for metadata-based methods
    # "classification" (logits [N, K]) or "segmentation" (per-pixel logits [N, K, H, W])
    task_type: str = "classification"


@dataclass
class DistillationResult:
    student: nn.Module
    steps: int
    metrics: dict[str, float]
    elapsed_seconds: float
    warnings: list[str]
    # (inputs, teacher logits) the method synthesised and kept (a pool), for the job's artifact
    synthetic: tuple[torch.Tensor, torch.Tensor] | None = None


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Generators take their states as CPU byte tensors only, but a checkpoint loaded with
    `map_location="cuda"` has them on the GPU: bring them back first. A checkpoint from a
    machine with more GPUs than this one restores the devices that are here."""
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        for index, device_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state.cpu(), index)


def check_finite(step: int, values: dict[str, float]) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            raise DivergedError(step, name, value)


class Throughput:
    """Pseudo samples and FLOPs per second between two log points.

    A loop wraps its training work in `with throughput.flops.measure():`; the first iteration is
    counted (core.utilisation), and every later one is assumed to do the same work.
    """

    def __init__(
        self, batch_size: int, count_flops: bool = True, elapsed_before: float = 0.0
    ) -> None:
        self.batch_size = batch_size
        self.flops = FlopMeter(enabled=count_flops)
        # a resumed run goes on from the training time its earlier attempts spent
        self.started = time.perf_counter() - elapsed_before
        self._last_time = self.started
        self._last_step = 0

    def reset(self, step: int) -> None:
        self._last_time = time.perf_counter()
        self._last_step = step

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def progress(self, step: int, total: int | None, budget: float | None = None) -> Progress:
        now = time.perf_counter()
        elapsed = now - self._last_time
        iterations_per_second = (step - self._last_step) / elapsed if elapsed > 0 else 0.0
        self._last_time, self._last_step = now, step
        flops = self.flops.per_iteration
        return Progress(
            step,
            total,
            iterations_per_second * self.batch_size,
            now - self.started,
            flops_per_second=None if flops is None else iterations_per_second * flops,
            rss_bytes=rss_bytes(),
            budget_seconds=budget,
        )


def frozen(model: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients: how a teacher is always used."""
    model.eval()
    for parameter in model.parameters():  # (ScriptModules have no requires_grad_)
        parameter.requires_grad_(False)
    return model


def clip_and_step(
    optimizer: torch.optim.Optimizer, parameters: Callable[[], Any], max_norm: float
) -> None:
    if max_norm > 0:
        nn.utils.clip_grad_norm_(parameters(), max_norm)
    optimizer.step()
