"""A small AlexNet (Krizhevsky et al., 2012) for 32 px inputs, and its half-width student.

ImageNet's 11x11 stride-4 first conv would reduce a 32 px image to almost nothing, so every conv
here is 3x3 stride 1 and the three max-pools do the down-sampling (32 -> 16 -> 8 -> 4). Channels
keep AlexNet's 64-192-384-256-256 and the classifier its two 4096-unit layers; `width` scales all
of them, and `alexnet_half` is width 0.5 (the "AlexNet-half" student of Lopes et al.).

Taps are the three conv stages (stage1: 16 px, stage2: 8 px, stage3: 4 px at 32 px input).
Larger inputs are average-pooled to 4x4 before the classifier so its size stays fixed.
"""

from __future__ import annotations

import torch
from torch import nn

from core.models.registry import RATE_BOUND, Bound, register_model

_CHANNELS = (64, 192, 384, 256, 256)
_HIDDEN = 4096


class SmallAlexNet(nn.Module):
    def __init__(
        self, num_classes: int, in_channels: int, image_size: int, width: float, dropout: float
    ) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        if image_size < 8:
            raise ValueError(f"image_size {image_size} is too small for AlexNet (minimum 8)")
        c1, c2, c3, c4, c5 = (max(1, round(c * width)) for c in _CHANNELS)
        hidden = max(1, round(_HIDDEN * width))
        self.stage1 = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, 1, 1), nn.ReLU(inplace=True), nn.MaxPool2d(2)
        )
        self.stage2 = nn.Sequential(
            nn.Conv2d(c1, c2, 3, 1, 1), nn.ReLU(inplace=True), nn.MaxPool2d(2)
        )
        self.stage3 = nn.Sequential(
            nn.Conv2d(c2, c3, 3, 1, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, 3, 1, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, 3, 1, 1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        pooled = min(image_size // 8, 4)
        self.pool = nn.AdaptiveAvgPool2d(pooled)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c5 * pooled * pooled, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.stage3(self.stage2(self.stage1(x)))))


_TAPS = ("stage1", "stage2", "stage3")
_BOUNDS = {"width": Bound(0.01, 4.0, integer=False), "dropout": RATE_BOUND}


@register_model(taps=_TAPS, bounds=_BOUNDS)
def alexnet(
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    width: float = 1.0,
    dropout: float = 0.0,
) -> nn.Module:
    """Small AlexNet for 32 px: 3x3 convs 64-192-384-256-256, FC 4096-4096, all scaled by width."""
    return SmallAlexNet(num_classes, in_channels, image_size, width, dropout)


@register_model(taps=_TAPS, bounds=_BOUNDS)
def alexnet_half(
    num_classes: int = 10, in_channels: int = 3, image_size: int = 32, dropout: float = 0.0
) -> nn.Module:
    """AlexNet-half: the small AlexNet at half width (32-96-192-128-128, FC 2048)."""
    return SmallAlexNet(num_classes, in_channels, image_size, 0.5, dropout)
