"""DFAD: data-free adversarial distillation (Fang et al., 2019).

A generator and the student play a min-max game on the mean absolute difference between the
teacher's and the student's logits. One iteration takes `student_steps` (5) student steps, each
on a fresh z batch with the generator's output detached, then `generator_steps` (1) generator
step on a fresh z batch that maximises the same L1 discrepancy (loss -L1). Unlike ZSKT there is
no KL, no attention term and no gradient clipping; the student uses SGD with momentum, the
generator Adam, and both learning rates drop x0.1 at 40% and 80% of the iterations.

L1 on logits rather than KL on probabilities is the paper's point: the KL saturates once the
student's softmax matches the teacher's, L1 keeps a gradient until the logits themselves match,
so the generator keeps finding hard samples late in training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.acceleration import Acceleration
from core.adversarial import AdversarialState
from core.evaluation import fresh_pseudo_batch_metrics
from core.generators import build_generator, draw_samples, generator_for
from core.losses import agreement, at_least_float32, float32_math, kl_divergence
from core.training import (
    CancelledError,
    DistillationResult,
    DistillationTask,
    Throughput,
    TrainingHooks,
    check_finite,
    frozen,
    seed_everything,
)

# Fractions of the run at which both learning rates are multiplied by LR_DECAY: 40% / 80%, chosen
# over the released script's 20% / 40% on validation (docs/methods.md, "DFAD").
PAPER_LR_MILESTONES = (0.4, 0.8)
LR_DECAY = 0.1

# The paper's generator widths: DAFL/generator A has 128 channels after the projection
# (DFAD's ngf = 64, doubled); DCGAN/generator B is parameterised by a multiplier of ngf = 64.
PAPER_DAFL_WIDTH = 128
PAPER_GENERATOR_WIDTH, CPU_GENERATOR_WIDTH = 1.0, 0.25

# The paper's per-data-set student settings (SGD, momentum 0.9).
CIFAR_LR, CIFAR_WEIGHT_DECAY = 0.1, 5e-4
MNIST_LR, MNIST_WEIGHT_DECAY = 0.01, 1e-4


def is_mnist_like(input_shape: tuple[int, int, int]) -> bool:
    """Single-channel inputs of at most 32 px get the paper's MNIST settings."""
    channels, height, width = input_shape
    return channels == 1 and max(height, width) <= 32


@dataclass
class DFADConfig:
    """Hyperparameters; defaults are the paper's CIFAR settings unless the input looks like MNIST.

    Fields left as None are derived from the teacher's input shape by `effective`: a 1-channel
    input of at most 32 px counts as MNIST-like.
    """

    iterations: int = 25_000  # the released CIFAR script: 500 epochs x 50 iterations
    batch_size: int = 256  # the paper's CIFAR value (512 on MNIST); results depend on it strongly
    student_steps: int = 5
    generator_steps: int = 1
    # Student SGD learning rate. None: 0.1 (CIFAR), or 0.01 for MNIST-like inputs; on the MNIST
    # digits here 0.1 leaves the student below 50% while 0.01 reaches 95% (docs/algorithms.md §7).
    lr_student: float | None = None
    weight_decay: float | None = None  # None: 5e-4 (CIFAR), or 1e-4 for MNIST-like inputs
    momentum: float = 0.9
    lr_generator: float = 1e-3  # Adam
    # Fractions of `iterations` at which both learning rates drop x0.1 (docs/methods.md, "DFAD").
    # () keeps them constant: a short run then learns at full speed until it is stopped.
    lr_milestones: tuple[float, ...] = PAPER_LR_MILESTONES
    z_dim: int | None = None  # None: 100 for 1-channel inputs, 256 otherwise (the paper's values)
    generator: str | None = None  # registry name; None: generator_for(input_shape) (dafl <= 64 px)
    # Multiple of the paper's generator width. None: 1 on a GPU, 0.25 on a CPU, where the
    # generator, not a LeNet, dominates the cost: a quarter width is ~5x faster per iteration and
    # still reaches ~95% on the MNIST digits (docs/algorithms.md §7).
    generator_width: float | None = None
    seed: int = 0
    device: str = "cpu"
    log_every: int = 10

    def effective(
        self, num_classes: int, input_shape: tuple[int, int, int] | None = None
    ) -> DFADConfig:
        """This config with every derived default filled in; without an input shape the
        input-dependent fields stay None (they cannot be chosen yet)."""
        del num_classes  # nothing here depends on the class count
        width = self.generator_width or (
            PAPER_GENERATOR_WIDTH if self.device.startswith("cuda") else CPU_GENERATOR_WIDTH
        )
        if input_shape is None:
            return replace(self, generator_width=width)
        mnist = is_mnist_like(input_shape)
        return replace(
            self,
            generator_width=width,
            lr_student=self.lr_student
            if self.lr_student is not None
            else (MNIST_LR if mnist else CIFAR_LR),
            weight_decay=self.weight_decay
            if self.weight_decay is not None
            else (MNIST_WEIGHT_DECAY if mnist else CIFAR_WEIGHT_DECAY),
            z_dim=self.z_dim if self.z_dim is not None else (100 if input_shape[0] == 1 else 256),
            generator=self.generator or generator_for(input_shape),
        )


Config = DFADConfig


def l1_discrepancy(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between logits, averaged over batch and classes (DFAD's loss),
    in float32 as every loss (core/losses.py)."""
    with float32_math(student_logits):
        return F.l1_loss(at_least_float32(student_logits), at_least_float32(teacher_logits))


def build_dfad_generator(
    name: str, z_dim: int, input_shape: tuple[int, int, int], width: float
) -> nn.Module:
    """A registered generator at `width` times the paper's width for this input shape."""
    channels, size, _ = input_shape
    scaled: float | int = (
        max(2, round(PAPER_DAFL_WIDTH * width)) if name in ("dafl", "zskt") else width
    )
    return build_generator(name, z_dim=z_dim, out_channels=channels, image_size=size, width=scaled)


def _milestones(iterations: int, fractions: tuple[float, ...]) -> list[int]:
    if any(not 0 < fraction < 1 for fraction in fractions):
        raise ValueError(f"lr_milestones must be fractions between 0 and 1, got {fractions}")
    return sorted({max(1, round(fraction * iterations)) for fraction in fractions})


def _build_state(
    config: DFADConfig,
    task: DistillationTask,
    device: torch.device,
    optimizer_options: dict[str, Any] | None = None,
) -> AdversarialState:
    assert config.generator is not None and config.z_dim is not None
    assert config.lr_student is not None and config.weight_decay is not None
    assert config.generator_width is not None
    generator = build_dfad_generator(
        config.generator, config.z_dim, task.input_shape, config.generator_width
    ).to(device)
    options = optimizer_options or {}
    optimizer_generator = torch.optim.Adam(
        generator.parameters(), lr=config.lr_generator, **options
    )
    optimizer_student = torch.optim.SGD(
        task.student.parameters(),
        lr=config.lr_student,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        **options,
    )
    milestones = _milestones(config.iterations, tuple(config.lr_milestones))
    return AdversarialState(
        generator=generator,
        optimizer_generator=optimizer_generator,
        optimizer_student=optimizer_student,
        scheduler_generator=torch.optim.lr_scheduler.MultiStepLR(
            optimizer_generator, milestones, LR_DECAY
        ),
        scheduler_student=torch.optim.lr_scheduler.MultiStepLR(
            optimizer_student, milestones, LR_DECAY
        ),
    )


def checkpoint_dict(
    step: int, config: DFADConfig, task: DistillationTask, state: AdversarialState
) -> dict[str, Any]:
    """The whole training state as one dict of tensors and plain values (loads with weights_only)."""
    return state.checkpoint("dfad", step, config, task.student)


def distill(
    task: DistillationTask,
    config: DFADConfig,
    hooks: TrainingHooks | None = None,
    resume_from: dict[str, Any] | None = None,
    acceleration: Acceleration | None = None,
) -> DistillationResult:
    """Run DFAD on `task`; the student is trained in place and returned in the result."""
    hooks = hooks or TrainingHooks()
    config = config.effective(task.num_classes, task.input_shape)
    assert config.z_dim is not None
    device = torch.device(config.device)
    speed = (acceleration or Acceleration()).resolved(device)
    speed.prepare(device)
    seed_everything(config.seed)
    teacher = frozen(task.teacher.to(device))
    student = task.student.to(device).train()

    state = _build_state(config, task, device, speed.optimizer_options())
    generator = state.generator.train()
    start = state.restore(resume_from, task.student) if resume_from else 0
    # the training passes go through these; the modules themselves are what is tapped and saved
    run_teacher, run_student, run_generator = (
        speed.forward_of(module, device) for module in (teacher, student, generator)
    )

    # every student and generator step draws a fresh batch: that many pseudo inputs per iteration
    # fresh pseudo batches for the metrics come from their own stream: logging never moves training
    fresh_draws = torch.Generator(device=device).manual_seed(config.seed + 1)
    throughput = Throughput(
        config.batch_size * (config.student_steps + config.generator_steps),
        count_flops=not speed.compile,
    )
    throughput.reset(start)
    metrics: dict[str, float] = {}
    step = start
    for step in range(start + 1, config.iterations + 1):
        with throughput.flops.measure():
            # --- student: imitate the teacher's logits on samples the generator cannot change
            discrepancies = []
            for _ in range(config.student_steps):
                z = torch.randn(config.batch_size, config.z_dim, device=device)
                with torch.no_grad():
                    pseudo = run_generator(z)
                    teacher_logits = run_teacher(pseudo)
                student_logits = run_student(pseudo)
                loss_student = l1_discrepancy(student_logits, teacher_logits)
                state.optimizer_student.zero_grad(set_to_none=True)
                loss_student.backward()
                state.optimizer_student.step()
                discrepancies.append(loss_student.detach())

            # --- generator: seek inputs where the logits disagree most; the student stays fixed
            student.requires_grad_(False)
            for _ in range(config.generator_steps):
                z = torch.randn(config.batch_size, config.z_dim, device=device)
                pseudo = run_generator(z)
                loss_generator = -l1_discrepancy(run_student(pseudo), run_teacher(pseudo))
                state.optimizer_generator.zero_grad(set_to_none=True)
                loss_generator.backward()
                state.optimizer_generator.step()
            student.requires_grad_(True)

        state.scheduler_generator.step()
        state.scheduler_student.step()

        if step % config.log_every == 0 or step == config.iterations:
            student_logits = student_logits.detach()
            fresh_z = torch.randn(
                config.batch_size, config.z_dim, device=device, generator=fresh_draws
            )
            metrics = {
                "loss_student": loss_student.item(),
                "loss_generator": loss_generator.item(),
                "l1": torch.stack(discrepancies).mean().item(),
                "kl": kl_divergence(teacher_logits, student_logits).item(),
                "pseudo_agreement": agreement(teacher_logits, student_logits),
                "lr_student": state.scheduler_student.get_last_lr()[0],
                "lr_generator": state.scheduler_generator.get_last_lr()[0],
                **fresh_pseudo_batch_metrics(generator, teacher, student, fresh_z),
            }
            check_finite(step, metrics)
            hooks.on_log(step, metrics, throughput.progress(step, config.iterations))
        if hooks.sample_every and step % hooks.sample_every == 0:
            hooks.on_samples(step, draw_samples(generator, config.z_dim, 64))
        if hooks.checkpoint_every and step % hooks.checkpoint_every == 0:
            hooks.on_checkpoint(step, checkpoint_dict(step, config, task, state))
        if hooks.should_stop(step):
            raise CancelledError(step)

    return DistillationResult(
        student=student,
        steps=step,
        metrics=metrics,
        elapsed_seconds=time.perf_counter() - throughput.started,
        warnings=[],
    )
