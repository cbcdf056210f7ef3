from __future__ import annotations

import math

import torch

from core.losses import agreement, attention_loss, attention_map, kl_divergence


def test_kl_is_zero_for_equal_logits_and_positive_otherwise() -> None:
    logits = torch.randn(8, 10)
    assert kl_divergence(logits, logits).item() < 1e-6
    assert kl_divergence(logits, torch.randn(8, 10)).item() > 0


def test_kl_is_the_per_sample_sum_over_classes() -> None:
    teacher, student = torch.randn(4, 3), torch.randn(4, 3)
    p, log_q = teacher.softmax(1), student.log_softmax(1)
    expected = (p * (p.log() - log_q)).sum(1).mean()
    assert math.isclose(kl_divergence(teacher, student).item(), expected.item(), rel_tol=1e-5)


def test_attention_map_is_unit_norm_per_sample() -> None:
    maps = attention_map(torch.randn(5, 16, 8, 8))
    assert maps.shape == (5, 64)
    assert torch.allclose(maps.norm(dim=1), torch.ones(5), atol=1e-5)


def test_attention_loss_ignores_channel_count_and_vanishes_for_equal_maps() -> None:
    activation = torch.randn(2, 4, 6, 6)
    doubled = torch.cat(
        [activation, activation], dim=1
    )  # same spatial attention, twice the channels
    assert attention_loss([activation], [doubled]).item() < 1e-10
    assert attention_loss([activation], [torch.randn(2, 8, 6, 6)]).item() > 0


def test_agreement_counts_matching_argmax() -> None:
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    student = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert agreement(teacher, student) == 0.75
