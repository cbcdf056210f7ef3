"""The one training loop every method runs in (docs/methods.md, "The shared loop").

A method (core/methods/<name>.py) is a `MethodRun`: how it builds its state, what one step does,
what it logs and samples. This loop owns the rest: the device, the seed, the frozen teacher, the
attention taps' life, acceleration, throughput and utilisation, log points, sample grids, the one
checkpoint layout and resume, cancel, and the time budget. After the method it runs the follow-up
phases a caller asks for (few-shot fine-tuning, core/fewshot.py) the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar, Protocol, TypeVar

import torch
from torch import nn

from core.acceleration import Acceleration
from core.evaluation import predict
from core.hyperparameters import MethodConfig
from core.method_registry import method_of_config
from core.segmentation import SEGMENTATION_TASK
from core.taps import ActivationRecorder, attention_recorders
from core.training import (
    CancelledError,
    DistillationResult,
    DistillationTask,
    Throughput,
    TrainingHooks,
    check_finite,
    frozen,
    restore_rng_state,
    rng_state,
    run_fraction,
    seed_everything,
)

CHECKPOINT_LAYOUT = 2  # the version of the dict `checkpoint` makes
SAMPLE_IMAGES = 64
SEGMENTATION_SAMPLE_IMAGES = 16  # each shown beside two masks


class Closable(Protocol):
    def close(self) -> None: ...


ClosableT = TypeVar("ClosableT", bound=Closable)


class BudgetTooSmallError(RuntimeError):
    """The time budget ran out before the student learned anything."""


@dataclass
class MethodContext:
    """What a method's run is handed: the task on its device, and the loop's services."""

    task: DistillationTask
    config: Any  # the method's effective config
    device: torch.device
    speed: Acceleration  # resolved for the device
    teacher: nn.Module  # frozen, on the device
    student: nn.Module  # on the device, in train mode
    warn: Callable[[str], None]
    _closing: list[Closable] = field(default_factory=list)

    def forward_of(self, module: nn.Module) -> nn.Module:
        """What the training passes call for `module` (acceleration applied); the module itself
        stays the one that is tapped and saved."""
        return self.speed.forward_of(module, self.device)

    def attention_taps(
        self, enabled: bool, without: str
    ) -> tuple[ActivationRecorder, ActivationRecorder]:
        """Teacher and student recorders on the task's taps whose spatial sizes match; the loop
        closes them when the run ends."""
        teacher_taps, student_taps, warning = attention_recorders(
            self.teacher,
            self.task.teacher_taps,
            self.student,
            self.task.student_taps,
            self.task.input_shape,
            enabled,
            without=without,
        )
        if warning:
            self.warn(warning)
        self.closes(teacher_taps)
        return teacher_taps, self.closes(student_taps)

    def closes(self, hooks: ClosableT) -> ClosableT:
        """`hooks` (forward hooks on the networks) are closed when the run ends, however it ends."""
        self._closing.append(hooks)
        return hooks

    def close(self) -> None:
        for recorder in self._closing:
            recorder.close()


class MethodRun:
    """One method's science: its state, its step, its metrics. Subclasses register themselves
    with core.method_registry.register_method."""

    method_name: ClassVar[str] = ""
    count_flops: ClassVar[bool] = True  # False where steps differ in cost (FLOPs counted once)

    def __init__(self, context: MethodContext) -> None:
        self.context = context
        self.config = context.config

    def total_steps(self) -> int | None:
        """Steps of the whole run; None when only the time budget ends it."""
        return self.config.iterations

    def inputs_per_step(self, step: int) -> int:
        """Inputs one step processes, for samples per second."""
        return self.config.batch_size

    def step(self, step: int, fraction: float) -> None:
        """Step `step` (from 1); `fraction` of the run was done before it (for the schedules)."""
        raise NotImplementedError

    def metrics(self, step: int) -> dict[str, float]:
        """The latest losses and diagnostics, asked for at log points only."""
        return {}

    def samples(self, count: int) -> torch.Tensor | None:
        """Up to `count` inputs as the method makes them now (teacher-normalised), or None."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """The method's own training state (the student's weights are saved by the loop)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state

    def synthetic_set(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(inputs, the teacher's logits on them) a method synthesised and kept, if any: the job
        publishes them so another student can be distilled from them without synthesis."""
        return None

    def student_trained(self, step: int) -> bool:
        """Whether the student has learned by step `step` (a budget ending before is an error)."""
        return step > 0


@dataclass(frozen=True)
class Phase:
    """A run of the loop on the student: the method, or a follow-up such as few-shot
    fine-tuning after it."""

    name: str  # a follow-up's metrics are prefixed "<name>_"
    run: Callable[[MethodContext], MethodRun]
    config: MethodConfig


def _context(
    task: DistillationTask,
    config: MethodConfig,
    acceleration: Acceleration | None,
    warn: Callable[[str], None],
) -> MethodContext:
    device = torch.device(config.device)
    speed = (acceleration or Acceleration()).resolved(device)
    speed.prepare(device)
    seed_everything(config.seed)
    return MethodContext(
        task=task,
        config=config,
        device=device,
        speed=speed,
        teacher=frozen(task.teacher.to(device)),
        student=task.student.to(device).train(),
        warn=warn,
    )


def checkpoint(
    phase: int, step: int, offset: int, elapsed: float, run: MethodRun
) -> dict[str, Any]:
    """The whole training state: plain values and tensors only (loads with weights_only)."""
    return {
        "layout": CHECKPOINT_LAYOUT,
        "method": run.method_name,
        "phase": phase,
        "step": step,  # counted across phases, as the metrics are
        "phase_offset": offset,  # steps of the earlier phases
        "elapsed_seconds": elapsed,
        "config": asdict(run.config),
        "student": run.context.student.state_dict(),
        "state": run.state_dict(),
        "rng": rng_state(),
    }


class _Loop:
    """The loop over one phase's MethodRun."""

    def __init__(self, run: MethodRun, hooks: TrainingHooks, prefix: str, offset: int) -> None:
        self.run, self.hooks, self.prefix, self.offset = run, hooks, prefix, offset
        self.config = run.config
        self.metrics: dict[str, float] = {}

    def fraction(self, done: int, elapsed: float) -> float:
        config = self.config
        return run_fraction(done, config.iterations, elapsed, config.budget_seconds, unknown=0.0)

    def execute(self, index: int, start: int, elapsed_before: float) -> int:
        """Steps start+1.. to the end of the phase; returns the last."""
        run, hooks, config = self.run, self.hooks, self.config
        total = run.total_steps()
        budget = config.budget_seconds
        throughput = Throughput(
            run.inputs_per_step(start + 1),
            count_flops=run.count_flops and not run.context.speed.compile,
            elapsed_before=elapsed_before,
        )
        throughput.reset(start)
        step = start
        out_of_time = self._out_of_time(throughput, step)  # a resumed run may have none left
        while not out_of_time and (total is None or step < total):
            step += 1
            with throughput.flops.measure():
                run.step(step, self.fraction(step - 1, throughput.elapsed()))
            # decided once per step: the last log point of a budget run is its last step
            out_of_time = self._out_of_time(throughput, step)
            throughput.batch_size = run.inputs_per_step(step)
            if step % config.log_every == 0 or step == total or out_of_time:
                self._log(step, throughput.progress(self.offset + step, self._total(total), budget))
            if self.prefix == "" and hooks.sample_every and step % hooks.sample_every == 0:
                self._sample(step)
            if hooks.checkpoint_every and step % hooks.checkpoint_every == 0:
                hooks.on_checkpoint(
                    self.offset + step,
                    checkpoint(index, self.offset + step, self.offset, throughput.elapsed(), run),
                )
            if hooks.should_stop(self.offset + step):
                raise CancelledError(self.offset + step)
        return step

    def _sample(self, step: int) -> None:
        """The method's samples to the hooks; for segmentation, fewer, with both networks'
        predicted masks on them."""
        context = self.run.context
        if context.task.task_type != SEGMENTATION_TASK:
            images = self.run.samples(SAMPLE_IMAGES)
            if images is not None:
                self.hooks.on_samples(step, images)
            return
        images = self.run.samples(SEGMENTATION_SAMPLE_IMAGES)
        if images is not None:
            masks = [predict(model, images, 256) for model in (context.teacher, context.student)]
            self.hooks.on_samples(step, images, masks=torch.stack(masks))

    def _out_of_time(self, throughput: Throughput, step: int) -> bool:
        budget = self.config.budget_seconds
        if budget is None or throughput.elapsed() < budget:
            return False
        if not self.run.student_trained(step):
            raise BudgetTooSmallError(
                f"the time budget of {budget:g}s ran out at step {step}, before the student "
                "was trained; give a larger budget_seconds"
            )
        return True

    def _total(self, total: int | None) -> int | None:
        return None if total is None else self.offset + total

    def _log(self, step: int, progress: Any) -> None:
        metrics = self.run.metrics(step)
        check_finite(self.offset + step, metrics)
        self.metrics = {self.prefix + name: value for name, value in metrics.items()}
        self.hooks.on_log(self.offset + step, self.metrics, progress)


def distill(
    task: DistillationTask,
    config: MethodConfig,
    hooks: TrainingHooks | None = None,
    resume_from: dict[str, Any] | None = None,
    acceleration: Acceleration | None = None,
    follow_ups: tuple[Phase, ...] = (),
) -> DistillationResult:
    """Train `task.student` with the method that `config` belongs to, then the follow-ups."""
    spec = method_of_config(config)
    phases = (Phase(spec.name, spec.run, config), *follow_ups)
    return run_phases(task, phases, hooks, resume_from, acceleration)


def run_phases(
    task: DistillationTask,
    phases: tuple[Phase, ...],
    hooks: TrainingHooks | None = None,
    resume_from: dict[str, Any] | None = None,
    acceleration: Acceleration | None = None,
) -> DistillationResult:
    """The phases one after the other on one student; steps and metrics count on across them."""
    hooks = hooks or TrainingHooks()
    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        hooks.on_warning(message)

    started = time.perf_counter()
    first_phase = int(resume_from.get("phase", 0)) if resume_from else 0
    offset = int(resume_from.get("phase_offset", 0)) if resume_from else 0
    metrics: dict[str, float] = {}
    synthetic = None
    for index, phase in enumerate(phases):
        if index < first_phase:
            continue
        effective = phase.config.effective(task.num_classes, task.input_shape)
        context = _context(task, effective, acceleration, warn)
        try:
            run = phase.run(context)
            start, elapsed = 0, 0.0
            if resume_from is not None and index == first_phase:
                context.student.load_state_dict(resume_from["student"])
                run.load_state_dict(resume_from["state"])
                restore_rng_state(resume_from["rng"])
                start = int(resume_from["step"]) - offset
                elapsed = float(resume_from.get("elapsed_seconds", 0.0))
            loop = _Loop(run, hooks, "" if index == 0 else f"{phase.name}_", offset)
            step = loop.execute(index, start, elapsed)
        finally:
            context.close()
        metrics |= loop.metrics
        synthetic = run.synthetic_set() if index == 0 else synthetic
        offset += step
        task = replace(task, student=context.student)
    return DistillationResult(
        student=task.student,
        steps=offset,
        metrics=metrics,
        elapsed_seconds=time.perf_counter() - started,
        warnings=warnings,
        synthetic=synthetic,
    )
