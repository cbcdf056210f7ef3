"""DFQ-style generator: data-free adversarial KD (Choi et al., 2020, "Data-free network
quantization with adversarial knowledge distillation"), with the loss weights of the
Fast-Datafree re-implementation.

A generator makes inputs whose batch statistics at every BatchNorm layer of the teacher match
the layer's running ones, that the teacher is sure of, whose classes are balanced, and where
the student disagrees with the teacher:

    L_G = bn * sum_l (||mu_l - running_mean_l|| + ||var_l - running_var_l||)
        + oh * CE(T(x), argmax T(x))  +  balance * -H(mean_batch softmax T(x))
        - adv * KL(T(x) || S(x))

One iteration: `generator_steps` (1) generator steps, then `student_steps` (10) KD steps at
temperature T (20), each on a fresh batch. Fast-Datafree's driver handed its generative
baselines the teacher as the student (its issue #11), so its DFQ ran with the adversarial term
at zero; here the term reads the real student. Settings: docs/methods.md, "DFQ".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.adversarial import AdversarialRun
from core.batchnorm import BatchNormStatistics
from core.generators import build_scaled_generator, generator_for
from core.hyperparameters import MethodConfig, hyperparameter
from core.loop import MethodContext
from core.losses import (
    agreement,
    information_entropy_loss,
    kl_divergence,
    one_hot_loss,
)
from core.method_registry import BATCHNORM_STATISTICS, register_method
from core.schedules import cosine, set_learning_rate

PAPER_GENERATOR_WIDTH, CPU_GENERATOR_WIDTH = 1.0, 0.25
# Fast-Datafree anneals the student's rate by cosine to 2e-4 from 0.1
FINAL_LR_FRACTION = 2e-3


@dataclass
class DFQConfig(MethodConfig):
    """Defaults: Fast-Datafree's DFQ script (CIFAR-10, WRN-40-2 -> WRN-16-1), except where a
    field says what a CPU worker uses instead."""

    bn: float = hyperparameter(
        1.0, "weight of the BatchNorm-statistics loss (Fast-Datafree: 1)", ge=0, le=1e4
    )
    one_hot: float = hyperparameter(
        1.0, "weight of the one-hot loss (Fast-Datafree: 1)", ge=0, le=1e4
    )
    adv: float = hyperparameter(
        1.0,
        "weight of the adversarial term, -KL(teacher || student) (Fast-Datafree: 1)",
        ge=0,
        le=1e4,
    )
    balance: float = hyperparameter(
        20.0,
        "weight of the class-balance term, -H(batch-mean softmax) in nats (Fast-Datafree: 20)",
        ge=0,
        le=1e4,
    )
    generator_steps: int = hyperparameter(
        1, "generator steps per iteration (Fast-Datafree: 1)", ge=0, le=100
    )
    student_steps: int = hyperparameter(
        10, "student KD steps per iteration, a fresh batch each (Fast-Datafree: 10)", ge=1, le=1000
    )
    temperature: float = hyperparameter(
        20.0,
        "KD temperature of the student's loss, scaled by T^2 (Fast-Datafree: 20)",
        gt=0,
        le=100,
    )
    lr_generator: float = hyperparameter(
        1e-3,
        "Adam learning rate of the generator, betas (0.5, 0.999) (Fast-Datafree: 1e-3)",
        gt=0,
        le=10,
    )
    lr_student: float = hyperparameter(
        0.1,
        "SGD learning rate of the student (momentum 0.9), cosine-annealed to 1/500 of it "
        "(Fast-Datafree: 0.1)",
        gt=0,
        le=10,
    )
    weight_decay: float = hyperparameter(
        1e-4, "student weight decay (Fast-Datafree: 1e-4)", ge=0, le=1
    )
    z_dim: int = hyperparameter(256, "noise dimension (Fast-Datafree: 256)", ge=1, le=4096)
    generator_width: float | None = hyperparameter(
        None,
        "multiple of the generator's 128 channels; unset: 1 on a GPU, 0.25 on a CPU",
        gt=0,
        le=4,
        cpu=CPU_GENERATOR_WIDTH,
        gpu=PAPER_GENERATOR_WIDTH,
    )
    iterations: int | None = hyperparameter(
        8_000,
        "iterations (Fast-Datafree: 200 epochs x 40 rounds of 1 generator and 10 student steps)",
        ge=1,
        le=10_000_000,
    )
    batch_size: int = hyperparameter(
        256, "pseudo inputs per step (Fast-Datafree: 256)", ge=2, le=8192
    )


@register_method(
    "dfq",
    title="DFQ",
    summary="a generator matches the teacher's BatchNorm statistics and seeks inputs where the "
    "student disagrees with the teacher; the student learns from them by KD",
    paper="Choi, Choi, El-Khamy & Lee, Data-Free Network Quantization With Adversarial "
    "Knowledge Distillation, CVPR workshops 2020",
    config=DFQConfig,
    requirements=(BATCHNORM_STATISTICS,),
    example={"generator_width": 0.25, "student_steps": 5},
)
class DFQ(AdversarialRun):
    """One iteration: `generator_steps` generator steps, then `student_steps` KD steps, each on a
    fresh z batch with the generator's output detached."""

    config: DFQConfig

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        config = self.config
        assert config.generator_width is not None
        input_shape = context.task.input_shape
        self.start(
            build_scaled_generator(
                generator_for(input_shape), config.z_dim, input_shape, config.generator_width
            )
        )
        try:
            self.statistics = context.closes(BatchNormStatistics(context.teacher))
        except ValueError:  # a program teacher: its layers are known only here
            raise ValueError(
                "method dfq matches the running statistics of the teacher's BatchNorm layers, "
                "and this teacher has none"
            ) from None
        options = context.speed.optimizer_options()
        self.optimizer_generator = torch.optim.Adam(
            self.generator.parameters(), lr=config.lr_generator, betas=(0.5, 0.999), **options
        )
        self.optimizer_student = torch.optim.SGD(
            context.student.parameters(),
            lr=config.lr_student,
            momentum=0.9,
            weight_decay=config.weight_decay,
            **options,
        )
        zero = torch.zeros(())  # the generator's terms stay 0 when a job asks for no steps
        self.loss_generator = self.loss_bn = self.loss_one_hot = zero
        self.loss_adversarial = self.loss_balance = zero

    def inputs_per_step(self, step: int) -> int:
        return self.config.batch_size * (self.config.student_steps + self.config.generator_steps)

    def step(self, step: int, fraction: float) -> None:
        config, student = self.config, self.context.student
        multiplier = FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * cosine(fraction)
        self.lr_student = set_learning_rate(self.optimizer_student, config.lr_student, multiplier)

        # --- generator: the teacher's statistics, its confidence, balanced classes, and the
        # student's disagreement; the student answers in eval mode and is not trained here
        student.eval().requires_grad_(False)
        for _ in range(config.generator_steps):
            pseudo = self.run_generator(self.z())
            teacher_logits = self.run_teacher(pseudo)
            self.loss_bn = self.statistics.loss()
            self.loss_one_hot = one_hot_loss(teacher_logits)
            self.loss_balance = information_entropy_loss(teacher_logits)
            self.loss_adversarial = -kl_divergence(teacher_logits, self.run_student(pseudo))
            self.loss_generator = (
                config.bn * self.loss_bn
                + config.one_hot * self.loss_one_hot
                + config.balance * self.loss_balance
                + config.adv * self.loss_adversarial
            )
            self.optimizer_generator.zero_grad(set_to_none=True)
            self.loss_generator.backward()
            self.optimizer_generator.step()
        student.train().requires_grad_(True)

        # --- student: KD at temperature T on fresh batches the generator cannot change
        for _ in range(config.student_steps):
            with torch.no_grad():
                inputs = self.run_generator(self.z())
                teacher_logits = self.run_teacher(inputs)
            self.student_kd_step(inputs, teacher_logits, config.temperature)

    def metrics(self, step: int) -> dict[str, float]:
        return {
            "loss_generator": self.loss_generator.item(),
            "loss_bn": self.loss_bn.item(),
            "loss_one_hot": self.loss_one_hot.item(),
            "loss_balance": self.loss_balance.item(),
            "loss_adversarial": self.loss_adversarial.item(),
            "loss_student": self.loss_student.item(),
            "pseudo_agreement": agreement(self.teacher_logits, self.student_logits.detach()),
            "lr_student": self.lr_student,
            "lr_generator": self.config.lr_generator,
            **self.fresh_metrics(),
        }
