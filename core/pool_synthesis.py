"""What the pool methods share (DeepInversion, CMI, FastDFKD; docs/methods.md, "BatchNorm
statistics"): one iteration synthesises a batch of inputs that match the teacher's BatchNorm
statistics, keeps it in a bounded pool with the teacher's logits, then trains the student by KD on
batches drawn from the pool. A method module writes `synthesise` (and its own state); this module
owns the pool, the student's phase, the warm-up, the artifact, the metrics and the checkpoint.

The released Fast-Datafree driver is the reference for the shape of a run: per epoch one
synthesised batch, then `kd_steps` (400) student steps on the pool; the student is not trained
during the first `warmup` epochs (FastDFKD: 20; DeepInversion and CMI: 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from core.augment import random_crop, random_flip
from core.batchnorm import BatchNormStatistics
from core.generators import is_mnist_like
from core.hyperparameters import MethodConfig, hyperparameter
from core.loop import MethodContext, MethodRun
from core.pool import ImagePool
from core.pool_student import PoolStudent

# The released scripts' student: SGD momentum 0.9, weight decay 1e-4, KD at T = 20 on batches of
# 256, cosine learning rate; crop with 4 px padding and flips on the pool's images.
PAPER_TEMPERATURE = 20.0
PAPER_WEIGHT_DECAY = 1e-4
CROP_PADDING = 4
MNIST_LR_STUDENT = 0.02


def flips_by_default(input_shape: tuple[int, int, int]) -> bool:
    """Mirror images are images of the same class for photos (3 channels), not for digits or
    characters (1 channel): the default for `flip` when a job leaves it unset."""
    return input_shape[0] != 1


@dataclass
class PoolSynthesisConfig(MethodConfig):
    """The fields every pool method has; each method restates the defaults it changes."""

    DATA_SIZE_FIELD: ClassVar[str | None] = "pool_size"

    iterations: int | None = hyperparameter(
        200, "synthesis rounds, each one batch into the pool (released scripts: 200 epochs)", ge=1
    )
    batch_size: int = hyperparameter(
        256, "inputs synthesised per round, and the student's batch (released: 256)", ge=2, le=8192
    )
    student_steps: int | None = hyperparameter(
        None,
        "student KD steps on the pool after each round; unset: 400 on a GPU (released kd_steps), "
        "50 on a CPU (a CPU budget's few rounds each train the student less)",
        ge=0,
        le=100_000,
        cpu=50,
        gpu=400,
    )
    warmup: int = hyperparameter(
        0, "rounds that only fill the pool before the student trains", ge=0
    )
    lr_student: float | None = hyperparameter(
        None,
        "SGD learning rate of the student, cosine; unset: the released value (0.1, FastDFKD "
        "0.2) for photos, 0.02 for MNIST-like inputs (1 channel, <= 32 px: 0.1 at T = 20 "
        "diverged a LeNet-5-half here)",
        gt=0,
        le=10,
    )
    weight_decay: float = hyperparameter(PAPER_WEIGHT_DECAY, "SGD weight decay", ge=0, le=1)
    temperature: float = hyperparameter(
        PAPER_TEMPERATURE, "KD temperature of the student's loss (released scripts: 20)", gt=0
    )
    pool_size: int = hyperparameter(
        51_200, "synthesised inputs kept (the oldest leave first); the synthetic artifact", ge=1
    )
    flip: bool | None = hyperparameter(
        None, "random horizontal flips in synthesis and KD; unset: on for 3-channel inputs only"
    )
    bn: float = hyperparameter(10.0, "weight of the BatchNorm-statistics loss", ge=0)
    one_hot: float = hyperparameter(1.0, "weight of the cross-entropy to the target classes", ge=0)

    def data_bytes(self, num_classes: int, input_shape: tuple[int, ...]) -> int:
        return 4 * self.pool_size * (math.prod(input_shape) + num_classes)

    PAPER_LR_STUDENT: ClassVar[float] = 0.1

    def effective(
        self, num_classes: int, input_shape: tuple[int, int, int] | None = None
    ) -> PoolSynthesisConfig:
        if input_shape is None:
            return self.with_device_defaults()
        mnist = is_mnist_like(input_shape)
        return self.with_device_defaults(
            flip=self.flip if self.flip is not None else flips_by_default(input_shape),
            lr_student=self.lr_student
            if self.lr_student is not None
            else (MNIST_LR_STUDENT if mnist else self.PAPER_LR_STUDENT),
        )


class PoolSynthesisRun(MethodRun):
    """One step = one synthesis round, then (after the warm-up) the student's steps on the pool.
    Subclasses write `synthesise`, and extend `state_dict` / `load_state_dict` / `metrics` with
    their own parts."""

    config: PoolSynthesisConfig
    count_flops: ClassVar[bool] = False  # warm-up rounds cost less than the rest

    def __init__(self, context: MethodContext, bn_momentum: float = 0.0) -> None:
        super().__init__(context)
        config = self.config
        self.pool = ImagePool(config.pool_size)
        self.statistics = context.closes(BatchNormStatistics(context.teacher, bn_momentum))
        self.run_teacher = context.forward_of(context.teacher)
        self.run_student = context.forward_of(context.student)
        # every draw of the synthesis (z, targets, augmentations) comes from this stream, on the
        # CPU whatever the device (the augmentations draw there), so a resumed run draws the same
        self.draws = torch.Generator().manual_seed(config.seed * 7919 + 3)
        assert config.lr_student is not None
        self.student = PoolStudent(
            context,
            lr=config.lr_student,
            temperature=config.temperature,
            weight_decay=config.weight_decay,
            seed=config.seed,
            augmentation=self.augment,
        )
        self.terms: dict[str, float] = {}

    # --- what a method writes

    def synthesise(self, step: int, fraction: float) -> torch.Tensor:
        """One round: a batch of inputs (teacher-normalised, detached) for the pool. Record the
        round's loss terms in `self.terms`."""
        raise NotImplementedError

    # --- shared pieces a method's synthesis uses

    def augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random crop (4 px padding) and, where `flip` is on, a horizontal flip."""
        images = random_crop(images, CROP_PADDING, generator)
        return random_flip(images, generator) if self.config.flip else images

    def targets(self) -> torch.Tensor:
        """Classes for a new batch, drawn uniformly."""
        classes = self.context.task.num_classes
        drawn = torch.randint(0, classes, (self.config.batch_size,), generator=self.draws)
        return drawn.to(self.context.device)

    def noise(self, *shape: int) -> torch.Tensor:
        """N(0, 1) of `shape` from the synthesis stream, on the device."""
        return torch.randn(shape, generator=self.draws).to(self.context.device)

    def adversarial(
        self, weight: float, teacher_logits: torch.Tensor, inputs: torch.Tensor
    ) -> torch.Tensor:
        """Fast-Datafree's adversarial term (CMI, FastDFKD): minus KL(S || T) per input, counted
        only where the student still agrees with the teacher, in float32 like every loss. Zero
        while `weight` is 0 or the student has not trained yet."""
        if weight == 0 or not self.student_trained(self.rounds_done):
            return teacher_logits.new_zeros((), dtype=torch.float32)
        student_logits = self.run_student(inputs).float()
        teacher_logits = teacher_logits.float()
        agree = (student_logits.argmax(1) == teacher_logits.argmax(1)).float()
        divergence = F.kl_div(
            F.log_softmax(teacher_logits, 1),
            F.log_softmax(student_logits, 1),
            log_target=True,
            reduction="none",
        ).sum(1)
        return -(divergence * agree).mean()

    # --- the loop's side

    def total_steps(self) -> int | None:
        return self.config.iterations

    def synthesis_steps_per_round(self) -> int:
        """Forward-backward passes of a batch one round's synthesis takes."""
        return 1

    def inputs_per_step(self, step: int) -> int:
        assert self.config.student_steps is not None
        return self.config.batch_size * (
            self.synthesis_steps_per_round() + self.config.student_steps
        )

    def student_trained(self, step: int) -> bool:
        return step > self.config.warmup

    def step(self, step: int, fraction: float) -> None:
        self.rounds_done = step - 1
        context = self.context
        student_mode = context.student.training
        context.student.eval()  # the adversarial term asks the student as it would answer
        try:
            images = self.synthesise(step, fraction)
        finally:
            context.student.train(student_mode)
        with torch.no_grad():
            self.pool.add(images, self.run_teacher(images))
        self.latest_round = images
        if self.student_trained(step) and self.config.student_steps:
            self.student.train(
                self.pool, self.config.student_steps, self.config.batch_size, fraction
            )

    def metrics(self, step: int) -> dict[str, float]:
        return {**self.terms, "pool_size": float(len(self.pool)), **self.student.metrics()}

    def samples(self, count: int) -> torch.Tensor | None:
        return self.pool.images[-count:] if len(self.pool) else None

    def synthetic_set(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return (self.pool.images, self.pool.logits) if len(self.pool) else None

    def state_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool.state_dict(),
            "student": self.student.state_dict(),
            "draws": self.draws.get_state(),
            "statistics": self.statistics.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pool.load_state_dict(state["pool"])
        self.student.load_state_dict(state["student"])
        self.draws.set_state(state["draws"])
        self.statistics.load_state_dict(state["statistics"])
