"""FastDFKD: up to 100x faster data-free KD (Fang, Mo, Wang, Song, Bei & Song, AAAI 2022).

DeepInversion spends thousands of steps on every batch; FastDFKD meta-learns one generator whose
weights are a good *start* for any batch, so a few steps (`g_steps`: 2, 5 or 10) adapt it. A
round: copy the shared generator, draw a learnable z and random target classes, take `g_steps`
Adam steps of

    bn * BN-statistics loss (blended over batches, momentum 0.9)
    + oh * CE(T(x), targets) + adv * (-KL(S || T) where S and T agree)

on augmented inputs (crop, flip), keep the inputs of the lowest loss in the pool, then move the
shared generator: first-order MAML (the sum of the copy's gradients over its steps) or Reptile
(towards the adapted copy), with Adam at lr_g * g_steps, betas (0.5, 0.999). The student is
trained by KD on the pool (core/pool_synthesis.py). The first `warmup` rounds only synthesise.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from core.generators import build_generator
from core.hyperparameters import hyperparameter
from core.loop import MethodContext
from core.method_registry import BATCHNORM_STATISTICS, register_method
from core.pool_synthesis import PoolSynthesisConfig, PoolSynthesisRun

# The released scripts' (g_steps, lr_z, lr_g) triples; other g_steps take the nearest row.
PAPER_STEP_SETTINGS = {2: (0.015, 5e-3), 5: (0.01, 3e-3), 10: (0.01, 2e-3)}
PAPER_GENERATOR_WIDTH = 128  # channels after the projection (ngf 64, doubled)
CPU_GENERATOR_WIDTH = 32


def paper_learning_rates(g_steps: int) -> tuple[float, float]:
    """(lr_z, lr_g) of the released script with the nearest g_steps."""
    nearest = min(PAPER_STEP_SETTINGS, key=lambda steps: (abs(steps - g_steps), steps))
    return PAPER_STEP_SETTINGS[nearest]


@dataclass
class FastDFKDConfig(PoolSynthesisConfig):
    """Defaults: the released CIFAR scripts (WRN rows) on a GPU; CPU values measured in
    docs/methods.md, "FastDFKD"."""

    iterations: int | None = hyperparameter(
        220, "synthesis rounds (released: 220 epochs, one batch each)", ge=1
    )
    warmup: int | None = hyperparameter(
        None,
        "rounds that only fill the pool; unset: 20 on a GPU (released), 4 on a CPU",
        ge=0,
        cpu=4,
        gpu=20,
    )
    PAPER_LR_STUDENT: ClassVar[float] = 0.2
    bn: float = hyperparameter(10.0, "weight of the BatchNorm-statistics loss (released 10)", ge=0)
    one_hot: float | None = hyperparameter(
        None,
        "weight of the CE to the targets; unset: 0.4 on a GPU (released, WRN), 3 on a CPU (in a "
        "CPU budget's few rounds 0.4 left the teacher calling ~20% of the inputs their target "
        "on the digits, 3 ~85%)",
        ge=0,
        cpu=3.0,
        gpu=0.4,
    )
    adv: float = hyperparameter(1.1, "weight of the adversarial term (released 1.1 WRN)", ge=0)
    g_steps: int = hyperparameter(
        2, "generator steps per round from the meta-learned start (paper: 2, 5 or 10)", ge=1
    )
    meta: str = hyperparameter(
        "maml",
        "meta update of the shared generator: maml (first order) or reptile",
        choices=("maml", "reptile"),
    )
    lr_generator: float | None = hyperparameter(
        None, "Adam lr of the generator copy; unset: the released value for g_steps", gt=0
    )
    lr_z: float | None = hyperparameter(
        None, "Adam lr of the latent z; unset: the released value for g_steps", gt=0
    )
    bn_momentum: float = hyperparameter(
        0.9, "blend of the BN statistics with earlier batches' (released bn_mmt 0.9)", ge=0, lt=1
    )
    z_dim: int = hyperparameter(256, "latent dimension (released nz 256)", ge=1, le=4096)
    generator_width: int | None = hyperparameter(
        None,
        "channels after the generator's projection; unset: 128 on a GPU (released), 32 on a CPU",
        ge=2,
        le=1024,
        cpu=CPU_GENERATOR_WIDTH,
        gpu=PAPER_GENERATOR_WIDTH,
    )

    def effective(
        self, num_classes: int, input_shape: tuple[int, int, int] | None = None
    ) -> FastDFKDConfig:
        config = super().effective(num_classes, input_shape)
        lr_z, lr_g = paper_learning_rates(self.g_steps)
        return config.with_device_defaults(
            lr_z=self.lr_z if self.lr_z is not None else lr_z,
            lr_generator=self.lr_generator if self.lr_generator is not None else lr_g,
        )


@register_method(
    "fastdfkd",
    title="FastDFKD",
    summary="a meta-learned generator adapts to each new batch in a few steps to match the "
    "teacher's BatchNorm statistics; the student learns by KD on the pool of its batches",
    paper="Fang, Mo, Wang, Song, Bei & Song, Up to 100x Faster Data-free Knowledge "
    "Distillation, AAAI 2022",
    config=FastDFKDConfig,
    requirements=(BATCHNORM_STATISTICS,),
    example={"g_steps": 2},
)
class FastDFKD(PoolSynthesisRun):
    config: FastDFKDConfig

    def __init__(self, context: MethodContext) -> None:
        config = context.config
        super().__init__(context, bn_momentum=config.bn_momentum)
        channels, size, _ = context.task.input_shape
        self.generator = build_generator(
            "dafl",
            z_dim=config.z_dim,
            out_channels=channels,
            image_size=size,
            width=config.generator_width,
        ).to(context.device)
        self.meta_optimizer = torch.optim.Adam(
            self.generator.parameters(), lr=config.lr_generator * config.g_steps, betas=(0.5, 0.999)
        )

    def synthesis_steps_per_round(self) -> int:
        return self.config.g_steps

    def synthesise(self, step: int, fraction: float) -> torch.Tensor:
        config, teacher = self.config, self.run_teacher
        adapted = copy.deepcopy(self.generator)
        z = self.noise(config.batch_size, config.z_dim).requires_grad_()
        targets = self.targets()
        inner = torch.optim.Adam(
            [{"params": adapted.parameters()}, {"params": [z], "lr": config.lr_z}],
            lr=config.lr_generator,
            betas=(0.5, 0.999),
        )
        shared, copies = list(self.generator.parameters()), list(adapted.parameters())
        best_loss, best = float("inf"), None
        for index in range(config.g_steps):
            inputs = adapted(z)
            augmented = self.augment(inputs, self.draws)
            teacher_logits = teacher(augmented)
            bn = self.statistics.loss()
            oh = F.cross_entropy(teacher_logits.float(), targets)
            adv = self.adversarial(config.adv, teacher_logits, augmented)
            loss = config.bn * bn + config.one_hot * oh + config.adv * adv
            if loss.item() < best_loss:
                best_loss, best = loss.item(), inputs.detach()
            inner.zero_grad(set_to_none=True)
            loss.backward()
            if config.meta == "maml":  # first order: the copy's gradients, summed over its steps
                for parameter, adapted_parameter in zip(shared, copies, strict=True):
                    gradient = adapted_parameter.grad
                    if gradient is None:
                        continue
                    parameter.grad = (
                        gradient.clone()
                        if index == 0 or parameter.grad is None
                        else parameter.grad + gradient
                    )
            inner.step()
        self.statistics.update_momentum()
        if config.meta == "reptile":  # towards the adapted copy
            for parameter, adapted_parameter in zip(shared, copies, strict=True):
                parameter.grad = (parameter.detach() - adapted_parameter.detach()).clone()
        self.meta_optimizer.step()
        self.meta_optimizer.zero_grad(set_to_none=True)
        self.terms = {
            "loss_synthesis": best_loss,
            "loss_bn": bn.item(),
            "loss_one_hot": oh.item(),
            "loss_adversarial": adv.item(),
            "target_agreement": (teacher_logits.argmax(1) == targets).float().mean().item(),
        }
        assert best is not None
        return best

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "generator": self.generator.state_dict(),
            "meta_optimizer": self.meta_optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.generator.load_state_dict(state["generator"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
