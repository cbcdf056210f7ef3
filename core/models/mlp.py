"""Hinton et al.'s (2015) fully connected MNIST networks, the Lopes et al. (2017) teacher/student pair.

Two hidden layers of 1 200 (teacher) or 800 (student) ReLU units on the flattened image. The
layers are named modules (fc1, relu1, fc2, relu2, fc3) so a method can read any hidden layer's
pre-activation (fc1, fc2) or post-activation output by name. MLPs have no spatial maps, so they
declare no attention taps.
"""

from __future__ import annotations

import torch
from torch import nn

from core.models.registry import RATE_BOUND, register_model


class HintonMLP(nn.Module):
    """flatten -> Linear(hidden) -> ReLU -> Linear(hidden) -> ReLU -> Linear(C)."""

    def __init__(
        self, num_classes: int, in_channels: int, image_size: int, hidden: int, dropout: float
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        inputs = in_channels * image_size * image_size
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(inputs, hidden)
        self.relu1 = nn.ReLU()
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, hidden)
        self.relu2 = nn.ReLU()
        self.drop2 = nn.Dropout(dropout)
        self.fc3 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.relu1(self.fc1(self.flatten(x))))
        x = self.drop2(self.relu2(self.fc2(x)))
        return self.fc3(x)


@register_model(taps=(), bounds={"dropout": RATE_BOUND})
def hinton1200(
    num_classes: int = 10, in_channels: int = 1, image_size: int = 28, dropout: float = 0.0
) -> nn.Module:
    """Hinton-1200: MLP with two hidden layers of 1 200 ReLU units (the Lopes et al. teacher)."""
    return HintonMLP(num_classes, in_channels, image_size, hidden=1200, dropout=dropout)


@register_model(taps=(), bounds={"dropout": RATE_BOUND})
def hinton800(
    num_classes: int = 10, in_channels: int = 1, image_size: int = 28, dropout: float = 0.0
) -> nn.Module:
    """Hinton-800: MLP with two hidden layers of 800 ReLU units (the Lopes et al. student)."""
    return HintonMLP(num_classes, in_channels, image_size, hidden=800, dropout=dropout)
