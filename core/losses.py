"""Divergences and attention transfer shared by the methods.

Every loss here is computed in float32 whatever its inputs' dtype and whatever autocast context
it is called from: a nearly converged student learns from differences (a logit gap of 0.03, an
attention map off by 1%) that bf16's 8-bit mantissa rounds away (docs/methods.md, "Precision").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """bf16 / fp16 values as float32; float32 and float64 as they are."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


@contextmanager
def float32_math(reference: torch.Tensor) -> Iterator[None]:
    """Turns autocast off for `reference`'s device type: ops inside run in their inputs' dtype."""
    with torch.autocast(reference.device.type, enabled=False):
        yield


def kl_divergence(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Forward KL(softmax(t/T) || softmax(s/T)), summed over classes, averaged over the batch
    (and, for per-pixel logits [N, K, H, W], over the pixels: the KL per pixel).

    `batchmean` is the true KL per sample. ZSKT's released code used the old `reduction='mean'`,
    which also divides by the number of classes C; see ZSKTConfig.beta for the consequence.
    """
    positions = student_logits[0, 0].numel()  # 1 for [N, K] logits
    with float32_math(student_logits):
        return (
            F.kl_div(
                F.log_softmax(at_least_float32(student_logits) / temperature, dim=1),
                F.log_softmax(at_least_float32(teacher_logits) / temperature, dim=1),
                reduction="batchmean",
                log_target=True,
            )
            / positions
        )


def attention_map(activation: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis' spatial attention: L2-normalised channel mean of A^2, flattened."""
    with float32_math(activation):
        return F.normalize(at_least_float32(activation).pow(2).mean(dim=1).flatten(1), dim=1)


def attention_loss(
    teacher_activations: list[torch.Tensor], student_activations: list[torch.Tensor]
) -> torch.Tensor:
    """Sum over tap pairs of the squared attention-map difference, averaged over batch and positions.

    The mean over positions (not a per-sample sum) matches Zagoruyko's and ZSKT's code, so beta
    keeps one meaning whatever the spatial size of a tap.
    """
    total = student_activations[0].new_zeros((), dtype=torch.float32)
    with float32_math(total):
        for teacher_activation, student_activation in zip(
            teacher_activations, student_activations, strict=True
        ):
            difference = attention_map(teacher_activation) - attention_map(student_activation)
            total = total + difference.pow(2).mean()
    return total


def agreement(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> float:
    """Fraction of inputs (of pixels, for per-pixel logits) on which both networks predict the
    same class."""
    return (teacher_logits.argmax(dim=1) == student_logits.argmax(dim=1)).float().mean().item()


def distillation_loss(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Hinton's KD loss: T^2 * KL(softmax(t/T) || softmax(s/T)); the T^2 keeps the gradient's
    size independent of the temperature."""
    return temperature**2 * kl_divergence(teacher_logits, student_logits, temperature)


def one_hot_loss(teacher_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the teacher's logits to their own argmax (DAFL's L_oh): low when the
    teacher is sure of a class, as it is on real images."""
    with float32_math(teacher_logits):
        logits = at_least_float32(teacher_logits)
        return F.cross_entropy(logits, logits.detach().argmax(dim=1))


def information_entropy_loss(teacher_logits: torch.Tensor) -> torch.Tensor:
    """-H(mean softmax over the batch), in nats (DAFL's L_ie, DFQ's batch balance term): lowest
    (-log C) when the batch's classes are equally frequent. For per-pixel logits [N, K, H, W]
    the mean runs over the batch and every pixel (DFAD's `class_balance` on segmentation)."""
    with float32_math(teacher_logits):
        probabilities = F.softmax(at_least_float32(teacher_logits), dim=1)
        mean = (
            probabilities.mean(dim=0)
            if probabilities.ndim == 2
            else probabilities.transpose(0, 1).flatten(1).mean(dim=1)
        )
        return (mean * torch.log(mean.clamp_min(torch.finfo(mean.dtype).tiny))).sum()


def activation_loss(features: torch.Tensor) -> torch.Tensor:
    """-mean |f| of the teacher's features (DAFL's L_a): real images excite the features that
    feed the classifier more than noise does."""
    with float32_math(features):
        return -at_least_float32(features).abs().mean()
