"""DAFL: data-free learning of student networks (Chen et al., ICCV 2019).

The teacher is a fixed discriminator: a generator learns to make inputs the teacher answers as it
answers real images, with no student in its loss,

    L_G = oh * CE(T(G(z)), argmax T(G(z)))        (one-hot: the teacher is sure of a class)
        + a  * -mean |f_T(G(z))|                   (activation: the features fire strongly)
        + ie * -H(mean_batch softmax T(G(z)))     (information entropy: classes balanced)

and the student learns by KD from the teacher on the generator's samples, detached. As in the
released script, one iteration is one z batch: a generator step on it, and a student step on the
same batch (further `student_steps` on fresh batches). Settings: docs/methods.md, "DAFL".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from core.adversarial import AdversarialRun
from core.generators import build_scaled_generator, generator_for, is_mnist_like
from core.hyperparameters import MethodConfig, hyperparameter
from core.loop import MethodContext
from core.losses import (
    activation_loss,
    agreement,
    information_entropy_loss,
    one_hot_loss,
)
from core.method_registry import register_method
from core.schedules import set_learning_rate, step_decay
from core.taps import InputRecorder, classifier_input_layer

# The released code takes the entropy with log10; this project's loss is in nats, so the released
# weights are divided by ln 10 to give the same gradients.
LOG10 = math.log(10.0)

# The released settings (README commands and the script's defaults), by data set.
RELEASED: dict[str, dict[str, Any]] = {
    "mnist": {
        "lr_generator": 0.2,
        "lr_student": 2e-3,
        "student_optimizer": "adam",
        "weight_decay": 0.0,
        "lr_milestones": (),
        "one_hot": 1.0,
        "activation": 0.1,
        "information_entropy": 5 / LOG10,
        "z_dim": 100,
    },
    "cifar10": {
        "lr_generator": 0.02,
        "lr_student": 0.1,
        "student_optimizer": "sgd",
        "weight_decay": 5e-4,
        "lr_milestones": (0.4, 0.8),  # epochs 800 and 1600 of 2000
        "one_hot": 0.05,
        "activation": 0.01,
        "information_entropy": 5 / LOG10,
        "z_dim": 1000,
    },
    "cifar100": {
        "lr_generator": 0.02,
        "lr_student": 0.1,
        "student_optimizer": "sgd",
        "weight_decay": 5e-4,
        "lr_milestones": (0.4, 0.8),
        "one_hot": 0.5,
        "activation": 0.1,
        "information_entropy": 20 / LOG10,
        "z_dim": 1000,
    },
}
LR_DECAY = 0.1
PAPER_GENERATOR_WIDTH, CPU_GENERATOR_WIDTH = 1.0, 0.25


def released_settings(num_classes: int, input_shape: tuple[int, int, int]) -> dict[str, Any]:
    """The released script's values for the data set these inputs look like."""
    if is_mnist_like(input_shape):
        return RELEASED["mnist"]
    return RELEASED["cifar100" if num_classes >= 100 else "cifar10"]


@dataclass
class DAFLConfig(MethodConfig):
    """Fields left as None take the released script's value for the data set the teacher's inputs
    look like: MNIST (1 channel, <= 32 px), else CIFAR-10, or CIFAR-100 from 100 classes."""

    student_steps: int = hyperparameter(
        1,
        "student KD steps per iteration: the first on the generator's batch, the others on fresh "
        "batches (released: 1)",
        ge=1,
        le=1000,
    )
    one_hot: float | None = hyperparameter(
        None,
        "weight of the one-hot loss; unset: 1 MNIST, 0.05 CIFAR-10, 0.5 CIFAR-100",
        ge=0,
        le=1e4,
    )
    activation: float | None = hyperparameter(
        None,
        "weight of the activation loss (-mean |features| at the teacher's classifier input); "
        "unset: 0.1 MNIST, 0.01 CIFAR-10, 0.1 CIFAR-100",
        ge=0,
        le=1e4,
    )
    information_entropy: float | None = hyperparameter(
        None,
        "weight of the information-entropy loss in nats; unset: the released 5 (20 for "
        "CIFAR-100) on log10 entropy, divided by ln 10: 2.17 (8.69)",
        ge=0,
        le=1e4,
    )
    temperature: float = hyperparameter(
        1.0, "KD temperature of the student's loss, scaled by T^2 (released: 1)", gt=0, le=100
    )
    lr_generator: float | None = hyperparameter(
        None, "Adam learning rate of the generator; unset: 0.2 MNIST, 0.02 CIFAR", gt=0, le=10
    )
    lr_student: float | None = hyperparameter(
        None, "learning rate of the student; unset: 2e-3 MNIST (Adam), 0.1 CIFAR (SGD)", gt=0, le=10
    )
    student_optimizer: str | None = hyperparameter(
        None,
        "adam or sgd (momentum 0.9); unset: adam MNIST, sgd CIFAR",
        choices=("adam", "sgd"),
    )
    weight_decay: float | None = hyperparameter(
        None, "student weight decay; unset: 0 MNIST, 5e-4 CIFAR", ge=0, le=1
    )
    lr_milestones: tuple[float, ...] | None = hyperparameter(
        None,
        "fractions of the run at which the student's rate drops x0.1; unset: none MNIST, 0.4 and "
        "0.8 CIFAR (epochs 800 and 1600 of 2000)",
    )
    z_dim: int | None = hyperparameter(
        None, "noise dimension; unset: 100 MNIST, 1000 CIFAR", ge=1, le=4096
    )
    generator_width: float | None = hyperparameter(
        None,
        "multiple of the released generator's 128 channels; unset: 1 on a GPU, 0.25 on a CPU "
        "(docs/methods.md, DAFL)",
        gt=0,
        le=4,
        cpu=CPU_GENERATOR_WIDTH,
        gpu=PAPER_GENERATOR_WIDTH,
    )
    iterations: int | None = hyperparameter(
        24_000,
        "iterations (released MNIST: 200 epochs x 120; CIFAR: 2000 x 120)",
        ge=1,
        le=10_000_000,
    )
    batch_size: int = hyperparameter(
        512, "pseudo inputs per step (released: 512 MNIST, 1024 CIFAR)", ge=2, le=8192
    )

    def effective(
        self, num_classes: int, input_shape: tuple[int, int, int] | None = None
    ) -> DAFLConfig:
        milestones = self.lr_milestones or ()
        if any(not 0 < fraction < 1 for fraction in milestones):
            raise ValueError(
                f"lr_milestones must be fractions between 0 and 1, got {list(milestones)}"
            )
        if input_shape is None:
            return self.with_device_defaults()
        released = released_settings(num_classes, input_shape)
        unset = {name: value for name, value in released.items() if getattr(self, name) is None}
        return self.with_device_defaults(**unset)


@register_method(
    "dafl",
    title="DAFL",
    summary="a generator makes inputs the teacher alone answers confidently, with strong "
    "features and balanced classes; the student learns from them by KD",
    paper="Chen, Wang, Xu, Yang, Liu, Shi, Xu, Xu & Tian, Data-Free Learning of Student "
    "Networks, ICCV 2019",
    config=DAFLConfig,
    example={"generator_width": 0.25},
)
class DAFL(AdversarialRun):
    """One iteration: a generator step on one z batch against the teacher alone, then
    `student_steps` KD steps, the first on that batch (detached)."""

    config: DAFLConfig

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        config = self.config
        assert config.z_dim is not None and config.generator_width is not None
        assert config.lr_generator is not None and config.lr_student is not None
        input_shape = context.task.input_shape
        self.start(
            build_scaled_generator(
                generator_for(input_shape), config.z_dim, input_shape, config.generator_width
            )
        )
        self.features = self._feature_recorder(context)
        options = context.speed.optimizer_options()
        self.optimizer_generator = torch.optim.Adam(
            self.generator.parameters(), lr=config.lr_generator, **options
        )
        parameters = context.student.parameters()
        self.optimizer_student = (
            torch.optim.Adam(
                parameters, lr=config.lr_student, weight_decay=config.weight_decay or 0, **options
            )
            if config.student_optimizer == "adam"
            else torch.optim.SGD(
                parameters,
                lr=config.lr_student,
                momentum=0.9,
                weight_decay=config.weight_decay or 0,
                **options,
            )
        )

    def _feature_recorder(self, context: MethodContext) -> InputRecorder | None:
        """The teacher's classifier features, or None (the activation term off) where the
        weight is 0 or the teacher has no nn.Linear to read them at."""
        if not self.config.activation:
            return None
        layer = classifier_input_layer(context.teacher)
        if layer is None:
            context.warn(
                "dafl: the teacher has no nn.Linear layer to read features at; the activation "
                "loss is left out"
            )
            return None
        return context.closes(InputRecorder(layer))

    def inputs_per_step(self, step: int) -> int:
        return self.config.batch_size * self.config.student_steps

    def step(self, step: int, fraction: float) -> None:
        config = self.config
        assert config.lr_student is not None and config.lr_generator is not None
        decay = step_decay(fraction, config.lr_milestones or (), LR_DECAY)
        self.lr_student = set_learning_rate(self.optimizer_student, config.lr_student, decay)
        self.lr_generator = config.lr_generator

        # --- generator: inputs the teacher answers as it answers real images
        pseudo = self.run_generator(self.z())
        teacher_logits = self.run_teacher(pseudo)
        self.loss_one_hot = one_hot_loss(teacher_logits)
        self.loss_information_entropy = information_entropy_loss(teacher_logits)
        self.loss_activation = (
            activation_loss(self.features.features)
            if self.features is not None
            else teacher_logits.new_zeros((), dtype=torch.float32)
        )
        self.loss_generator = (
            (config.one_hot or 0) * self.loss_one_hot
            + (config.activation or 0) * self.loss_activation
            + (config.information_entropy or 0) * self.loss_information_entropy
        )
        self.optimizer_generator.zero_grad(set_to_none=True)
        self.loss_generator.backward()
        self.optimizer_generator.step()

        # --- student: KD on the same batch (the released code's joint step), then fresh ones
        inputs, batch_logits = pseudo.detach(), teacher_logits.detach()
        for index in range(config.student_steps):
            if index > 0:
                with torch.no_grad():
                    inputs = self.run_generator(self.z())
                    batch_logits = self.run_teacher(inputs)
            self.student_kd_step(inputs, batch_logits, config.temperature)

    def metrics(self, step: int) -> dict[str, float]:
        return {
            "loss_generator": self.loss_generator.item(),
            "loss_one_hot": self.loss_one_hot.item(),
            "loss_activation": self.loss_activation.item(),
            "loss_information_entropy": self.loss_information_entropy.item(),
            "loss_student": self.loss_student.item(),
            "pseudo_agreement": agreement(self.teacher_logits, self.student_logits.detach()),
            "lr_student": self.lr_student,
            "lr_generator": self.lr_generator,
            **self.fresh_metrics(self.config.temperature),
        }
