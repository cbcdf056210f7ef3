"""LeNet-5 (LeCun et al., 1998) and the half-width student used by Lopes et al. and DFAD."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from core.models.registry import SHAPE_BOUNDS, register_model


class LeNet5(nn.Module):
    """Conv(5x5) -> ReLU -> MaxPool, twice, then a conv covering the remaining map and two FCs.

    The third conv's kernel equals the spatial size left after the second block, so any image
    size of at least 16 px works (32 px gives the classic 5x5 kernel).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        widths: tuple[int, ...],
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        c1, c2, c3, f1 = widths
        remaining = ((image_size - 4) // 2 - 4) // 2
        if remaining < 1:
            raise ValueError(f"image_size {image_size} is too small for LeNet-5 (minimum 16)")

        def normalised(channels: int, two_d: bool = True) -> list[nn.Module]:
            if not batchnorm:
                return []
            return [nn.BatchNorm2d(channels) if two_d else nn.BatchNorm1d(channels)]

        self.block1 = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5), *normalised(c1), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(c1, c2, 5), *normalised(c2), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.block3 = nn.Sequential(nn.Conv2d(c2, c3, remaining), *normalised(c3), nn.ReLU())
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c3, f1),
            *normalised(f1, two_d=False),
            nn.ReLU(),
            nn.Linear(f1, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.block3(self.block2(self.block1(x))))


# two 5x5 convs and two pools: below 16 px nothing is left for the third conv
_BOUNDS = {"image_size": replace(SHAPE_BOUNDS["image_size"], minimum=16)}


@register_model(taps=("block1", "block2"), bounds=_BOUNDS)
def lenet5(num_classes: int = 10, in_channels: int = 1, image_size: int = 32) -> nn.Module:
    """LeNet-5: 6-16-120 conv channels, 84 hidden units (~61k parameters at 32x32x1)."""
    return LeNet5(num_classes, in_channels, image_size, widths=(6, 16, 120, 84))


@register_model(taps=("block1", "block2"), bounds=_BOUNDS)
def lenet5_half(num_classes: int = 10, in_channels: int = 1, image_size: int = 32) -> nn.Module:
    """LeNet-5-half: every layer at half the channels of LeNet-5 (3-8-60, 42 hidden units)."""
    return LeNet5(num_classes, in_channels, image_size, widths=(3, 8, 60, 42))


@register_model(taps=("block1", "block2"), bounds=_BOUNDS)
def lenet5_bn(num_classes: int = 10, in_channels: int = 1, image_size: int = 32) -> nn.Module:
    """LeNet-5 with BatchNorm after every conv and the hidden FC: a small BatchNorm teacher whose
    classifier reads positions (no global pooling), for the BatchNorm-statistics methods."""
    return LeNet5(num_classes, in_channels, image_size, (6, 16, 120, 84), batchnorm=True)


@register_model(taps=("block1", "block2"), bounds=_BOUNDS)
def lenet5_half_bn(num_classes: int = 10, in_channels: int = 1, image_size: int = 32) -> nn.Module:
    """LeNet-5-half with BatchNorm: the small BatchNorm student beside `lenet5_half`."""
    return LeNet5(num_classes, in_channels, image_size, (3, 8, 60, 42), batchnorm=True)
