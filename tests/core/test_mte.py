from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.datasets import LabelledImages
from core.models import build
from core.mte import matching_images, plot_transition_curves, transition_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def one_pair_at_a_time(
    student: nn.Module, teacher: nn.Module, image: torch.Tensor, target: int, steps: int
) -> tuple[list[float], list[float]]:
    """Algorithm 2 as written: one image, one target class, mean-reduced CE on a batch of one."""
    student.eval()
    teacher.eval()
    x = image[None].clone().requires_grad_(True)
    student_p, teacher_p = [], []
    for _ in range(steps):
        logits = student(x)
        with torch.no_grad():
            teacher_p.append(F.softmax(teacher(x), 1)[0, target].item())
            student_p.append(F.softmax(logits, 1)[0, target].item())
        (gradient,) = torch.autograd.grad(F.cross_entropy(logits, torch.tensor([target])), x)
        x = (x - gradient).detach().requires_grad_(True)
    return student_p, teacher_p


def test_a_network_against_itself_has_zero_transition_error(
    mnist_teacher: nn.Module, digits: tuple[LabelledImages, LabelledImages]
) -> None:
    _, heldout = digits
    curves = transition_curves(mnist_teacher, mnist_teacher, heldout.images, 10, steps=5)
    assert curves.mte == 0.0
    twin = copy.deepcopy(mnist_teacher)
    assert transition_curves(twin, mnist_teacher, heldout.images, 10, steps=5).mte == 0.0


def test_trained_and_untrained_networks_differ_and_curves_have_the_right_shape(
    mnist_teacher: nn.Module, digits: tuple[LabelledImages, LabelledImages]
) -> None:
    _, heldout = digits
    torch.manual_seed(0)
    untrained = build("lenet5_half")
    mnist_teacher.train()  # modes must come back as they were
    curves = transition_curves(untrained, mnist_teacher, heldout.images, 12, steps=8)
    assert mnist_teacher.training and untrained.training
    mnist_teacher.eval()
    assert curves.mte > 0.05
    assert curves.images == 12 and curves.pairs == 12 * 9 and curves.steps == 8
    for array in (curves.student_mean, curves.teacher_stderr):
        assert array.shape == (8,) and np.isfinite(array).all()
    # the walk descends the student's CE to j, so the student's belief in j rises
    assert curves.student_mean[-1] > curves.student_mean[0]
    assert curves.teacher_mean.min() >= 0 and curves.teacher_mean.max() <= 1


def test_batched_walk_equals_the_papers_one_pair_at_a_time_loop(
    mnist_teacher: nn.Module, digits: tuple[LabelledImages, LabelledImages]
) -> None:
    """Summed CE over a batch gives every row exactly its own gradient, so batching (in any
    chunk size) reproduces the released code's per-pair curves."""
    _, heldout = digits
    torch.manual_seed(1)
    student = build("lenet5_half")
    images, classes = matching_images(student, mnist_teacher, heldout.images, 2)
    batched = transition_curves(student, mnist_teacher, heldout.images, 2, steps=4, chunk_size=5)
    whole = transition_curves(student, mnist_teacher, heldout.images, 2, steps=4)
    np.testing.assert_allclose(batched.student_mean, whole.student_mean, atol=1e-6)

    rows_student, rows_teacher = [], []
    for image, agreed in zip(images, classes.tolist(), strict=True):
        for offset in range(1, 10):
            student_p, teacher_p = one_pair_at_a_time(
                student, mnist_teacher, image, (agreed + offset) % 10, 4
            )
            rows_student.append(student_p)
            rows_teacher.append(teacher_p)
    np.testing.assert_allclose(whole.student_mean, np.mean(rows_student, 0), atol=1e-5)
    np.testing.assert_allclose(whole.teacher_mean, np.mean(rows_teacher, 0), atol=1e-5)
    expected_mte = np.abs(np.array(rows_teacher) - np.array(rows_student)).mean()
    assert whole.mte == pytest.approx(expected_mte, abs=1e-5)


def test_networks_that_never_agree_are_refused() -> None:
    first, second = nn.Linear(4, 3), nn.Linear(4, 3)
    with torch.no_grad():
        first.weight.zero_(), second.weight.zero_()
        first.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
        second.bias.copy_(torch.tensor([0.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="agree on none"):
        transition_curves(first, second, torch.randn(5, 4), 5, steps=2)


def test_plot_is_a_png_and_the_numbers_serialise(
    mnist_teacher: nn.Module, digits: tuple[LabelledImages, LabelledImages]
) -> None:
    _, heldout = digits
    curves = transition_curves(build("lenet5_half"), mnist_teacher, heldout.images, 3, steps=3)
    assert plot_transition_curves(curves).startswith(PNG_MAGIC)
    numbers = curves.as_dict()
    assert numbers["mte"] == curves.mte and len(numbers["teacher_mean"]) == 3
