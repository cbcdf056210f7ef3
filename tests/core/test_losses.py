from __future__ import annotations

import math

import torch

from core.losses import (
    activation_loss,
    agreement,
    attention_loss,
    attention_map,
    distillation_loss,
    information_entropy_loss,
    kl_divergence,
    one_hot_loss,
)


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


def test_information_entropy_loss_is_minus_log_classes_for_a_balanced_batch() -> None:
    balanced = torch.eye(4) * 50  # four confident inputs, one per class
    assert math.isclose(information_entropy_loss(balanced).item(), -math.log(4), rel_tol=1e-5)
    one_class = torch.tensor([[50.0, 0, 0, 0]] * 4)
    assert information_entropy_loss(one_class).item() > -1e-6  # all mass on one class: H = 0
    logits = torch.randn(6, 4)
    mean = logits.softmax(1).mean(0)
    expected = (mean * mean.log()).sum()
    assert math.isclose(information_entropy_loss(logits).item(), expected.item(), rel_tol=1e-5)


def test_one_hot_loss_is_the_cross_entropy_to_the_argmax() -> None:
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.5, 3.0]])
    expected = -(logits.log_softmax(1)[0, 0] + logits.log_softmax(1)[1, 2]) / 2
    assert math.isclose(one_hot_loss(logits).item(), expected.item(), rel_tol=1e-6)


def test_activation_loss_is_minus_the_mean_absolute_feature() -> None:
    features = torch.tensor([[1.0, -3.0], [0.0, 2.0]])
    assert activation_loss(features).item() == -1.5


def test_distillation_loss_scales_the_tempered_kl_by_t_squared() -> None:
    teacher, student = torch.randn(5, 10), torch.randn(5, 10)
    tempered = kl_divergence(teacher, student, temperature=4.0)
    assert math.isclose(
        distillation_loss(teacher, student, 4.0).item(), 16 * tempered.item(), rel_tol=1e-6
    )
    assert distillation_loss(teacher, student).item() == kl_divergence(teacher, student).item()
