"""DFAD: data-free adversarial distillation (Fang et al., 2019).

A generator and the student play a min-max game on the mean absolute difference between the
teacher's and the student's logits. One iteration takes `student_steps` (5) student steps, each
on a fresh z batch with the generator's output detached, then `generator_steps` (1) generator
step on a fresh z batch that maximises the same L1 discrepancy (loss -L1). Unlike ZSKT there is
no KL, no attention term and no gradient clipping; the student uses SGD with momentum, the
generator Adam, and both learning rates drop x0.1 at 40% and 80% of the iterations.

On a segmentation teacher (per-pixel logits [N, K, H, W], DFAD §4.3) the student's loss is the
same L1 averaged over every pixel, and the generator maximises log(L1 + 1) instead (its loss is
-log(L1 + 1)): the per-pixel discrepancy is large and unbounded, and the logarithm keeps the
generator's steps from growing with it.

Two opt-in departures for segmentation, each off by default (the paper's DFAD):
`segmentation_loss` "kl" (per-pixel KL instead of L1 for both players) and `class_balance` (DAFL's
information-entropy term on the teacher's mean pixel prediction in the generator's loss); and
`student_optimizer` "adam" for any task. bench/segmentation.py measured them on a CPU budget
(docs/results.md, "segmentation"); a BatchNorm-statistics prior in the generator's loss was
measured too, did not help, and is not offered.

L1 on logits rather than KL on probabilities is the paper's point: the KL saturates once the
student's softmax matches the teacher's, L1 keeps a gradient until the logits themselves match,
so the generator keeps finding hard samples late in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.adversarial import AdversarialRun
from core.generators import build_scaled_generator, generator_for, is_mnist_like
from core.hyperparameters import MethodConfig, hyperparameter
from core.loop import MethodContext
from core.losses import (
    agreement,
    at_least_float32,
    float32_math,
    information_entropy_loss,
    kl_divergence,
)
from core.method_registry import register_method
from core.schedules import set_learning_rate, step_decay
from core.segmentation import SEGMENTATION_TASK

# Fractions of the run at which both learning rates are multiplied by LR_DECAY: 40% / 80%, chosen
# over the released script's 20% / 40% on validation (docs/methods.md, "DFAD").
PAPER_LR_MILESTONES = (0.4, 0.8)
LR_DECAY = 0.1

# The paper's generator widths: multiples of generator A's 128 channels and of generator B's
# ngf = 64 (core/generators.py, build_scaled_generator).
PAPER_GENERATOR_WIDTH, CPU_GENERATOR_WIDTH = 1.0, 0.25

# The paper's per-data-set student settings (SGD, momentum 0.9).
CIFAR_LR, CIFAR_WEIGHT_DECAY = 0.1, 5e-4
MNIST_LR, MNIST_WEIGHT_DECAY = 0.01, 1e-4


@dataclass
class DFADConfig(MethodConfig):
    """Hyperparameters; defaults are the paper's CIFAR settings unless the input looks like MNIST.

    Fields left as None are derived from the teacher's input shape by `effective`: a 1-channel
    input of at most 32 px counts as MNIST-like.
    """

    student_steps: int = hyperparameter(
        5, "student steps per iteration, a fresh z each (paper: 5)", ge=1, le=1000
    )
    generator_steps: int = hyperparameter(
        1, "generator steps per iteration (paper: 1)", ge=0, le=100
    )
    # on the MNIST digits here 0.1 leaves the student below 50% while 0.01 reaches 95%
    lr_student: float | None = hyperparameter(
        None,
        "SGD learning rate of the student; unset: 0.01 for MNIST-like inputs (1 channel, "
        "<= 32 px; the paper's MNIST value), else 0.1 (the paper's CIFAR value)",
        gt=0,
        le=10,
    )
    weight_decay: float | None = hyperparameter(
        None, "SGD weight decay; unset: 1e-4 for MNIST-like inputs, else 5e-4 (paper)", ge=0, le=1
    )
    momentum: float = hyperparameter(0.9, "SGD momentum (paper: 0.9)", ge=0, lt=1)
    student_optimizer: str = hyperparameter(
        "sgd",
        "sgd (the paper; momentum and weight decay as set) or adam (lr_student is then Adam's "
        "rate, weight decay as set): on the CPU digit scenes the segmentation student learns "
        "within the budget with adam 3e-3, not with sgd 0.1",
        choices=("sgd", "adam"),
    )
    lr_generator: float = hyperparameter(
        1e-3, "Adam learning rate of the generator (paper: 1e-3)", gt=0, le=1
    )
    lr_milestones: tuple[float, ...] = hyperparameter(
        PAPER_LR_MILESTONES,
        "fractions of the run at which both learning rates drop x0.1 (docs/methods.md, DFAD); "
        "[] keeps them constant",
    )
    z_dim: int | None = hyperparameter(
        None, "noise dimension; unset: 100 for 1-channel inputs, else 256 (paper)", ge=1, le=4096
    )
    generator: str | None = hyperparameter(
        None,
        "dafl (generator A, <= 64 px) or dcgan (generator B, 128 px); unset: chosen by input size",
        choices=("dafl", "dcgan"),
    )
    generator_width: float | None = hyperparameter(
        None,
        "multiple of the paper's generator width; unset: 1 on a GPU, 0.25 on a CPU (about 5x "
        "faster, still ~95% on the MNIST digits)",
        gt=0,
        le=4,
        cpu=CPU_GENERATOR_WIDTH,
        gpu=PAPER_GENERATOR_WIDTH,
    )
    iterations: int | None = hyperparameter(
        25_000, "iterations (the released CIFAR script: 500 epochs x 50)", ge=1, le=10_000_000
    )
    batch_size: int = hyperparameter(
        256, "pseudo inputs per step (paper: 256 CIFAR, 512 MNIST)", ge=2, le=8192
    )
    segmentation_loss: str = hyperparameter(
        "l1",
        "segmentation only: the per-pixel discrepancy both players use, l1 on the logits (the "
        "paper) or kl between the softmaxes (per pixel; on the CPU digit scenes the student "
        "leaves the all-background plateau within a few hundred steps with kl, not with l1)",
        choices=("l1", "kl"),
    )
    class_balance: float = hyperparameter(
        0.0,
        "segmentation only: weight of a generator term that rewards inputs whose pixels the "
        "teacher spreads over its classes (entropy of its mean per-pixel prediction, DAFL's "
        "information-entropy loss); 0 is the paper's DFAD",
        ge=0,
        le=100,
    )

    def effective(
        self, num_classes: int, input_shape: tuple[int, int, int] | None = None
    ) -> DFADConfig:
        """This config with every derived default filled in; without an input shape the
        input-dependent fields stay None (they cannot be chosen yet)."""
        if any(not 0 < fraction < 1 for fraction in self.lr_milestones):
            raise ValueError(
                f"lr_milestones must be fractions between 0 and 1, got {list(self.lr_milestones)}"
            )
        if input_shape is None:
            return self.with_device_defaults()
        mnist = is_mnist_like(input_shape)
        return self.with_device_defaults(
            lr_student=self.lr_student
            if self.lr_student is not None
            else (MNIST_LR if mnist else CIFAR_LR),
            weight_decay=self.weight_decay
            if self.weight_decay is not None
            else (MNIST_WEIGHT_DECAY if mnist else CIFAR_WEIGHT_DECAY),
            z_dim=self.z_dim if self.z_dim is not None else (100 if input_shape[0] == 1 else 256),
            generator=self.generator or generator_for(input_shape),
        )


def l1_discrepancy(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between logits, averaged over batch and classes (DFAD's loss),
    in float32 as every loss (core/losses.py)."""
    with float32_math(student_logits):
        return F.l1_loss(at_least_float32(student_logits), at_least_float32(teacher_logits))


def discrepancy_of(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, task_type: str, loss: str
) -> torch.Tensor:
    """DFAD's L1, or on a segmentation task with `loss` "kl" the KL per pixel."""
    if task_type == SEGMENTATION_TASK and loss == "kl":
        return kl_divergence(teacher_logits, student_logits)
    return l1_discrepancy(student_logits, teacher_logits)


def generator_objective(discrepancy: torch.Tensor, task_type: str) -> torch.Tensor:
    """What the generator minimises: -L1 for classification, -log(L1 + 1) for segmentation."""
    return -torch.log1p(discrepancy) if task_type == SEGMENTATION_TASK else -discrepancy


def build_dfad_generator(
    name: str, z_dim: int, input_shape: tuple[int, int, int], width: float
) -> nn.Module:
    """A registered generator at `width` times the paper's width for this input shape."""
    return build_scaled_generator(name, z_dim, input_shape, width)


def student_optimizer(
    student: nn.Module, config: DFADConfig, options: dict[str, Any]
) -> torch.optim.Optimizer:
    """The paper's SGD with momentum, or Adam when the config asks for it."""
    assert config.lr_student is not None and config.weight_decay is not None
    if config.student_optimizer == "adam":
        return torch.optim.Adam(
            student.parameters(),
            lr=config.lr_student,
            weight_decay=config.weight_decay,
            **options,
        )
    return torch.optim.SGD(
        student.parameters(),
        lr=config.lr_student,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        **options,  # type: ignore[arg-type]
    )


@register_method(
    "dfad",
    title="DFAD",
    summary="a generator and the student play a min-max game on the L1 distance between "
    "teacher and student logits",
    paper="Fang, Song, Wang, Shen, Wang & Song, Data-Free Adversarial Distillation, 2019",
    config=DFADConfig,
    task_types=("classification", SEGMENTATION_TASK),
    example={"generator_width": 0.25},
)
class DFAD(AdversarialRun):
    """One iteration: `student_steps` student steps, each on a fresh z with the generator's output
    detached, then `generator_steps` generator steps on a fresh z that maximise the L1."""

    config: DFADConfig

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        config = self.config
        assert config.generator is not None and config.z_dim is not None
        assert config.lr_student is not None and config.weight_decay is not None
        assert config.generator_width is not None
        self.start(
            build_dfad_generator(
                config.generator, config.z_dim, context.task.input_shape, config.generator_width
            )
        )
        options = context.speed.optimizer_options()
        self.optimizer_generator = torch.optim.Adam(
            self.generator.parameters(), lr=config.lr_generator, **options
        )
        self.optimizer_student = student_optimizer(context.student, config, options)
        self.loss_generator = torch.zeros(())  # stays 0 when the job asks for no generator steps

    def inputs_per_step(self, step: int) -> int:
        # every student and generator step draws a fresh batch
        return self.config.batch_size * (self.config.student_steps + self.config.generator_steps)

    def step(self, step: int, fraction: float) -> None:
        config, student = self.config, self.context.student
        task_type = self.context.task.task_type
        assert config.lr_student is not None
        decay = step_decay(fraction, config.lr_milestones, LR_DECAY)
        self.lr_student = set_learning_rate(self.optimizer_student, config.lr_student, decay)
        self.lr_generator = set_learning_rate(self.optimizer_generator, config.lr_generator, decay)

        # --- student: imitate the teacher's logits on samples the generator cannot change
        discrepancies = []
        for _ in range(config.student_steps):
            with torch.no_grad():
                pseudo = self.run_generator(self.z())
                self.teacher_logits = self.run_teacher(pseudo)
            self.student_logits = self.run_student(pseudo)
            self.loss_student = discrepancy_of(
                self.student_logits, self.teacher_logits, task_type, config.segmentation_loss
            )
            self.optimizer_student.zero_grad(set_to_none=True)
            self.loss_student.backward()
            self.optimizer_student.step()
            discrepancies.append(
                self.loss_student.detach()
                if config.segmentation_loss == "l1" or task_type != SEGMENTATION_TASK
                else l1_discrepancy(self.student_logits.detach(), self.teacher_logits)
            )
        self.discrepancies = discrepancies

        # --- generator: seek inputs where the logits disagree most; the student stays fixed
        student.requires_grad_(False)
        for _ in range(config.generator_steps):
            pseudo = self.run_generator(self.z())
            student_logits = self.run_student(pseudo)
            teacher_logits = self.run_teacher(pseudo)
            self.loss_generator = generator_objective(
                discrepancy_of(student_logits, teacher_logits, task_type, config.segmentation_loss),
                task_type,
            )
            if config.class_balance and task_type == SEGMENTATION_TASK:
                self.loss_generator = self.loss_generator + (
                    config.class_balance * information_entropy_loss(teacher_logits)
                )
            self.optimizer_generator.zero_grad(set_to_none=True)
            self.loss_generator.backward()
            self.optimizer_generator.step()
        student.requires_grad_(True)

    def metrics(self, step: int) -> dict[str, float]:
        student_logits = self.student_logits.detach()
        return {
            "loss_student": self.loss_student.item(),
            "loss_generator": self.loss_generator.item(),
            "l1": torch.stack(self.discrepancies).mean().item(),
            "kl": kl_divergence(self.teacher_logits, student_logits).item(),
            "pseudo_agreement": agreement(self.teacher_logits, student_logits),
            "lr_student": self.lr_student,
            "lr_generator": self.lr_generator,
            **self.fresh_metrics(),
        }
