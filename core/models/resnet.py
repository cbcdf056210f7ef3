"""ResNets (He et al., 2016) in the CIFAR variant: ResNet-18/34 (four stages, used by DFAD and
ZSKT re-runs) and ResNet-8/20 (the paper's three-stage 6n+2 family, small BatchNorm teachers and
students for MNIST-sized work on a CPU).

The ImageNet stem (7x7 stride-2 conv + max-pool) would shrink a 32 px image to 8 px before the
first stage; the CIFAR variant uses one 3x3 stride-1 conv and no pooling, so the stages see 32,
16, 8 (and 4) px. Attention taps are the stage outputs, layer1, layer2, ...
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.models.registry import Bound, register_model


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN; a 1x1 projection shortcut when the shape changes (post-activation)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = (
            nn.Identity()
            if stride == 1 and in_planes == planes
            else nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stage i (from 0) has blocks[i] blocks of width * 2**i channels, stride 2 from the second."""

    def __init__(
        self, blocks: tuple[int, ...], num_classes: int, in_channels: int, width: int
    ) -> None:
        super().__init__()
        widths = [width * 2**index for index in range(len(blocks))]
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        planes = width
        self.stages: list[nn.Sequential] = []
        for index, (count, out_planes) in enumerate(zip(blocks, widths, strict=True)):
            stride = 1 if index == 0 else 2
            layers = []
            for block in range(count):
                layers.append(BasicBlock(planes, out_planes, stride if block == 0 else 1))
                planes = out_planes
            stage = nn.Sequential(*layers)
            self.add_module(f"layer{index + 1}", stage)  # the names taps and checkpoints use
            self.stages.append(stage)
        self.fc = nn.Linear(widths[-1], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        for stage in self.stages:
            out = stage(out)
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def _check_size(image_size: int) -> None:
    # three stride-2 stages: below 8 px the last stage would see a 0-pixel map
    if image_size < 8:
        raise ValueError(f"image_size {image_size} is too small for a CIFAR ResNet (minimum 8)")


_TAPS = ("layer1", "layer2", "layer3", "layer4")
_BOUNDS = {"width": Bound(1, 256)}  # channels of the first stage (64 in the paper)


@register_model(taps=_TAPS, bounds=_BOUNDS)
def resnet18(
    num_classes: int = 10, in_channels: int = 3, image_size: int = 32, width: int = 64
) -> nn.Module:
    """ResNet-18, CIFAR stem (3x3 stride 1, no max-pool); taps after each of the four stages."""
    _check_size(image_size)
    return CifarResNet((2, 2, 2, 2), num_classes, in_channels, width)


@register_model(taps=_TAPS, bounds=_BOUNDS)
def resnet34(
    num_classes: int = 10, in_channels: int = 3, image_size: int = 32, width: int = 64
) -> nn.Module:
    """ResNet-34, CIFAR stem (3x3 stride 1, no max-pool); taps after each of the four stages."""
    _check_size(image_size)
    return CifarResNet((3, 4, 6, 3), num_classes, in_channels, width)


_THREE_STAGE_TAPS = ("layer1", "layer2", "layer3")
_THREE_STAGE_BOUNDS = {"width": Bound(1, 256)}  # channels of the first stage (16 in the paper)


@register_model(taps=_THREE_STAGE_TAPS, bounds=_THREE_STAGE_BOUNDS)
def resnet8(
    num_classes: int = 10, in_channels: int = 1, image_size: int = 32, width: int = 16
) -> nn.Module:
    """ResNet-8 (He et al.'s CIFAR 6n+2, n = 1): a small BatchNorm network for MNIST-sized work."""
    _check_size(image_size)
    return CifarResNet((1, 1, 1), num_classes, in_channels, width)


@register_model(taps=_THREE_STAGE_TAPS, bounds=_THREE_STAGE_BOUNDS)
def resnet20(
    num_classes: int = 10, in_channels: int = 1, image_size: int = 32, width: int = 16
) -> nn.Module:
    """ResNet-20 (He et al.'s CIFAR 6n+2, n = 3): a BatchNorm teacher for MNIST-sized work."""
    _check_size(image_size)
    return CifarResNet((3, 3, 3), num_classes, in_channels, width)
