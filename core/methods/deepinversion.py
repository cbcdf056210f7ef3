"""DeepInversion and Adaptive DeepInversion (Yin, Molchanov, Li, Alvarez, Mallya, Hoiem, Jha &
Kautz, Dreaming to Distill, CVPR 2020). Written from the paper.

A round optimises a batch of *inputs* directly, from noise, with Adam (betas 0.5 / 0.9, cosine
learning rate within the round) against

    oh * CE(T(x'), targets) + bn * BN-statistics loss (first layer x `first_bn_multiplier`)
    + tv_l1 * TV_1(x') + tv_l2 * TV_2(x') + l2 * ||x'||^2 / N
    + competition * (1 - JS(T(x') / 3, S(x') / 3))

where x' is x jittered (a random roll) and, for photos, flipped. The last term is ADI's
competition: it pushes inputs to where the student does not yet agree with the teacher (Jensen-
Shannon divergence at temperature 3, probabilities clamped to [0.01, 0.99]); `competition` 0 is
plain DeepInversion. The round's best inputs go to the pool and the student learns from the pool
by KD (core/pool_synthesis.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.augment import jitter, random_flip
from core.hyperparameters import hyperparameter
from core.losses import at_least_float32, float32_math
from core.method_registry import BATCHNORM_STATISTICS, register_method
from core.pool_synthesis import PoolSynthesisConfig, PoolSynthesisRun
from core.schedules import cosine, set_learning_rate

COMPETITION_TEMPERATURE = 3.0
PROBABILITY_CLAMP = (0.01, 0.99)


def total_variation(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L1, L2) total variation over horizontal, vertical and both diagonal neighbours: the mean
    absolute difference, and the sum of the four differences' L2 norms (the paper's two forms)."""
    differences = (
        images[:, :, :, :-1] - images[:, :, :, 1:],
        images[:, :, :-1, :] - images[:, :, 1:, :],
        images[:, :, 1:, :-1] - images[:, :, :-1, 1:],
        images[:, :, :-1, :-1] - images[:, :, 1:, 1:],
    )
    l1 = sum(difference.abs().mean() for difference in differences)
    l2 = sum(torch.linalg.vector_norm(difference) for difference in differences)
    return l1, l2  # type: ignore[return-value]


def competition_score(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """1 - JS(P_T || P_S) at temperature 3, probabilities clamped: ADI's competition term, low
    where the two networks disagree."""
    with float32_math(student_logits):
        low, high = PROBABILITY_CLAMP
        teacher = F.softmax(at_least_float32(teacher_logits) / COMPETITION_TEMPERATURE, 1)
        student = F.softmax(at_least_float32(student_logits) / COMPETITION_TEMPERATURE, 1)
        teacher, student = teacher.clamp(low, high), student.clamp(low, high)
        middle = (teacher + student) / 2
        divergence = 0.5 * (
            (teacher * (teacher / middle).log()).sum(1)
            + (student * (student / middle).log()).sum(1)
        )
        return 1 - divergence.mean().clamp(0, 1)


@dataclass
class DeepInversionConfig(PoolSynthesisConfig):
    """Defaults: the paper's CIFAR-10 command on a GPU; CPU values measured in docs/methods.md,
    "DeepInversion"."""

    synthesis_steps: int | None = hyperparameter(
        None,
        "Adam steps on each batch of inputs; unset: 2000 on a GPU (paper), 200 on a CPU",
        ge=1,
        le=100_000,
        cpu=200,
        gpu=2000,
    )
    lr_synthesis: float = hyperparameter(
        0.05, "Adam learning rate of the inputs, cosine within a round (paper: 0.05)", gt=0, le=10
    )
    bn: float = hyperparameter(10.0, "weight of the BatchNorm-statistics loss (paper: 10)", ge=0)
    first_bn_multiplier: float = hyperparameter(
        10.0, "extra weight of the first BatchNorm layer's term (paper: 10)", ge=0
    )
    one_hot: float = hyperparameter(1.0, "weight of the CE to the target classes (paper: 1)", ge=0)
    tv_l1: float = hyperparameter(0.0, "weight of the L1 total variation (CIFAR: 0)", ge=0)
    tv_l2: float = hyperparameter(
        2.5e-5, "weight of the L2 total variation (paper CIFAR: 2.5e-5)", ge=0
    )
    l2: float = hyperparameter(0.0, "weight of the inputs' squared norm (ImageNet: 1e-5)", ge=0)
    competition: float = hyperparameter(
        0.0,
        "ADI's competition weight: 1 - JS(teacher, student) at T = 3; 0 = plain DeepInversion",
        ge=0,
    )
    jitter: int = hyperparameter(2, "largest random shift in pixels (paper CIFAR: 2)", ge=0, le=64)


@register_method(
    "deepinversion",
    title="DeepInversion",
    summary="batches of inputs optimised from noise to match the teacher's BatchNorm "
    "statistics and target classes (with ADI's competition, where the student disagrees); "
    "the student learns by KD on the pool of batches",
    paper="Yin, Molchanov, Li, Alvarez, Mallya, Hoiem, Jha & Kautz, Dreaming to Distill: "
    "Data-free Knowledge Transfer via DeepInversion, CVPR 2020",
    config=DeepInversionConfig,
    requirements=(BATCHNORM_STATISTICS,),
    example={"synthesis_steps": 100, "competition": 1.0},
)
class DeepInversion(PoolSynthesisRun):
    config: DeepInversionConfig

    def synthesis_steps_per_round(self) -> int:
        assert self.config.synthesis_steps is not None
        return self.config.synthesis_steps

    def synthesise(self, step: int, fraction: float) -> torch.Tensor:
        config = self.config
        assert config.synthesis_steps is not None
        inputs = self.noise(config.batch_size, *self.context.task.input_shape).requires_grad_()
        targets = self.targets()
        optimizer = torch.optim.Adam([inputs], lr=config.lr_synthesis, betas=(0.5, 0.9))
        compete = config.competition > 0 and self.student_trained(self.rounds_done)
        best_loss, best = math.inf, inputs.detach()
        for index in range(config.synthesis_steps):
            set_learning_rate(
                optimizer, config.lr_synthesis, cosine(index / config.synthesis_steps)
            )
            shifted = jitter(inputs, config.jitter, self.draws)
            if config.flip:
                shifted = random_flip(shifted, self.draws)
            teacher_logits = self.run_teacher(shifted)
            oh = F.cross_entropy(teacher_logits.float(), targets)
            bn = self.statistics.loss(first_weight=config.first_bn_multiplier)
            tv_l1, tv_l2 = total_variation(shifted)
            l2 = shifted.pow(2).flatten(1).sum(1).mean()
            loss = (
                config.one_hot * oh
                + config.bn * bn
                + config.tv_l1 * tv_l1
                + config.tv_l2 * tv_l2
                + config.l2 * l2
            )
            competition = teacher_logits.new_zeros(())
            if compete:
                competition = competition_score(teacher_logits, self.run_student(shifted))
                loss = loss + config.competition * competition
            if loss.item() < best_loss:
                best_loss, best = loss.item(), inputs.detach().clone()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        self.terms = {
            "loss_synthesis": best_loss,
            "loss_one_hot": oh.item(),
            "loss_bn": bn.item(),
            "loss_tv_l1": float(tv_l1.detach()),
            "loss_tv_l2": float(tv_l2.detach()),
            "loss_l2": l2.item(),
            "loss_competition": competition.item(),
            "target_agreement": (teacher_logits.argmax(1) == targets).float().mean().item(),
        }
        return best
