"""Divergences and attention transfer shared by the methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_divergence(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Forward KL(softmax(t/T) || softmax(s/T)), summed over classes, averaged over the batch.

    `batchmean` is the true KL per sample. ZSKT's released code used the old `reduction='mean'`,
    which also divides by the number of classes C; see ZSKTConfig.beta for the consequence.
    """
    return F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )


def attention_map(activation: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis' spatial attention: L2-normalised channel mean of A^2, flattened."""
    return F.normalize(activation.pow(2).mean(dim=1).flatten(1), dim=1)


def attention_loss(
    teacher_activations: list[torch.Tensor], student_activations: list[torch.Tensor]
) -> torch.Tensor:
    """Sum over tap pairs of the squared attention-map difference, averaged over batch and positions.

    The mean over positions (not a per-sample sum) matches Zagoruyko's and ZSKT's code, so beta
    keeps one meaning whatever the spatial size of a tap.
    """
    total = student_activations[0].new_zeros(())
    for teacher_activation, student_activation in zip(
        teacher_activations, student_activations, strict=True
    ):
        difference = attention_map(teacher_activation) - attention_map(student_activation)
        total = total + difference.pow(2).mean()
    return total


def agreement(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> float:
    """Fraction of inputs on which both networks predict the same class."""
    return (teacher_logits.argmax(dim=1) == student_logits.argmax(dim=1)).float().mean().item()
