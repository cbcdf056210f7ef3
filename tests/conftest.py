"""Fixtures every test layer shares: real digits and a teacher trained on them in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from core.datasets import LabelledImages, mnist_digits, save_npz
from core.evaluation import accuracy
from core.models import build
from core.training_supervised import train_classifier


@pytest.fixture(scope="session")
def digits() -> tuple[LabelledImages, LabelledImages]:
    """4 000 real MNIST digits to train teachers on, 1 000 held out for every accuracy claim."""
    return mnist_digits(seed=0).split(4000)


@pytest.fixture(scope="session")
def mnist_teacher(digits: tuple[LabelledImages, LabelledImages]) -> nn.Module:
    torch.manual_seed(0)
    train, heldout = digits
    teacher = train_classifier(build("lenet5"), train, epochs=8, seed=0)
    assert accuracy(teacher, heldout.images, heldout.labels) > 0.95, (
        "the test teacher did not train"
    )
    return teacher


@pytest.fixture(scope="session")
def teacher_file(mnist_teacher: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("teacher") / "lenet5.safetensors"
    save_file(mnist_teacher.state_dict(), str(path))
    return path


@pytest.fixture(scope="session")
def heldout_file(
    digits: tuple[LabelledImages, LabelledImages], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    path = tmp_path_factory.mktemp("data") / "heldout.npz"
    save_npz(path, digits[1])
    return path


pytest_plugins = ["tests.real_services"]
