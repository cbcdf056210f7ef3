"""Wide residual networks (Zagoruyko & Komodakis, 2016), pre-activation, as used by ZSKT."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.models.registry import RATE_BOUND, Bound, register_model


class PreActBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate
        self.shortcut = (
            None
            if in_planes == out_planes and stride == 1
            else nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        # The projection shortcut reads the pre-activated input, as in the reference WRN.
        residual = x if self.shortcut is None else self.shortcut(activated)
        out = self.conv1(activated)
        out = F.relu(self.bn2(out))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return residual + self.conv2(out)


class WideResNet(nn.Module):
    """WRN-depth-k: a 3x3 stem of 16 channels, then three groups of 16k, 32k, 64k channels."""

    def __init__(
        self, depth: int, widen_factor: int, num_classes: int, in_channels: int, drop_rate: float
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(
                f"WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}"
            )
        blocks = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.group1 = self._group(widths[0], widths[1], blocks, 1, drop_rate)
        self.group2 = self._group(widths[1], widths[2], blocks, 2, drop_rate)
        self.group3 = self._group(widths[2], widths[3], blocks, 2, drop_rate)
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    @staticmethod
    def _group(
        in_planes: int, out_planes: int, blocks: int, stride: int, drop_rate: float
    ) -> nn.Sequential:
        return nn.Sequential(
            *(
                PreActBlock(
                    in_planes if i == 0 else out_planes,
                    out_planes,
                    stride if i == 0 else 1,
                    drop_rate,
                )
                for i in range(blocks)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.group3(self.group2(self.group1(self.stem(x))))
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


# WRN-16-1 ... WRN-40-2 in ZSKT, WRN-28-10 the widest in the paper; depth is 6n+4
_BOUNDS = {"depth": Bound(10, 100), "widen_factor": Bound(1, 20), "drop_rate": RATE_BOUND}


@register_model(taps=("group1", "group2", "group3"), bounds=_BOUNDS)
def wrn(
    depth: int = 16,
    widen_factor: int = 1,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    drop_rate: float = 0.0,
) -> nn.Module:
    """WRN-depth-k, pre-activation; attention taps after each of the three groups."""
    if image_size < 8:
        raise ValueError(f"image_size {image_size} is too small for a WRN (minimum 8)")
    return WideResNet(depth, widen_factor, num_classes, in_channels, drop_rate)
