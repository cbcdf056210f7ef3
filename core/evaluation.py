"""Measuring networks on real labelled data (only ever for evaluation, never for training)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Classes [N] (classifier) or per-pixel classes [N, H, W] (segmentation) on the CPU, in
    eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    predictions = [
        model(images[start : start + batch_size].to(device)).argmax(dim=1).cpu()
        for start in range(0, len(images), batch_size)
    ]
    model.train(was_training)
    return torch.cat(predictions)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return (predict(model, images) == labels.cpu()).float().mean().item()


def agreement_on(first: nn.Module, second: nn.Module, images: torch.Tensor) -> float:
    return (predict(first, images) == predict(second, images)).float().mean().item()


@torch.no_grad()
def fresh_pseudo_batch_metrics(
    generator: nn.Module,
    teacher: nn.Module,
    student: nn.Module,
    z: torch.Tensor,
    temperature: float = 1.0,
) -> dict[str, float]:
    """Agreement and KL(teacher || student) on pseudo inputs the student has not trained on.

    Both networks answer in eval mode, as they would at inference; the generator keeps its mode.
    """
    from core.losses import agreement, kl_divergence

    pseudo = generator(z)
    modes = (teacher.training, student.training)
    teacher.eval()
    student.eval()
    try:
        teacher_logits, student_logits = teacher(pseudo), student(pseudo)
    finally:
        teacher.train(modes[0])
        student.train(modes[1])
    return {
        "fresh_kl": kl_divergence(teacher_logits, student_logits, temperature).item(),
        "fresh_agreement": agreement(teacher_logits, student_logits),
    }
