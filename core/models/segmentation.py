"""DeepLabV3 (Chen et al., 2017) at CPU size: the segmentation pair of DFAD §4.3 scaled down.

The paper distils DeepLabV3-ResNet50 into DeepLabV3-MobileNetV2. Here the teacher is a DeepLabV3
head on a small BatchNorm ResNet (the registry's CIFAR-style BasicBlocks) and the student the same
head, narrower, on MobileNetV2 inverted residuals; the student has about a quarter of the
teacher's parameters. Both reach output stride 8 (three stride-2 stages), read the last stage
with atrous spatial pyramid pooling (rates 1, 2, 4 and a global-pool branch: the paper's 6, 12, 18
are for 33 px maps, wider than these whole maps) and return per-pixel logits [N, K, H, W] at the
input's resolution. Taps are the stage outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.models.registry import Bound, register_model
from core.models.resnet import BasicBlock
from core.segmentation import SEGMENTATION_TASK

ASPP_RATES = (2, 4)  # beside the 1x1 branch and the global pool


def _conv_bn_relu(
    in_channels: int, out_channels: int, kernel: int = 1, dilation: int = 1, stride: int = 1
) -> nn.Sequential:
    padding = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(
            in_channels, out_channels, kernel, stride, padding, dilation=dilation, bias=False
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ASPP(nn.Module):
    """Parallel 1x1, dilated 3x3 and image-pooling branches, concatenated and projected."""

    def __init__(self, in_channels: int, channels: int, dropout: float) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [_conv_bn_relu(in_channels, channels)]
            + [_conv_bn_relu(in_channels, channels, 3, rate) for rate in ASPP_RATES]
        )
        # no BatchNorm on the pooled branch: one value per channel and image cannot be normalised
        # over a batch of one (torchvision's ASPPPooling fails there)
        self.pooling = nn.Sequential(nn.Conv2d(in_channels, channels, 1), nn.ReLU(inplace=True))
        self.project = nn.Sequential(
            _conv_bn_relu(channels * (len(ASPP_RATES) + 2), channels), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pooling(F.adaptive_avg_pool2d(x, 1)).expand(-1, -1, x.shape[2], x.shape[3])
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1))


class DeepLabHead(nn.Sequential):
    """ASPP, a 3x3 conv and the per-pixel classifier (torchvision's DeepLabHead layout)."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, dropout: float) -> None:
        super().__init__(
            ASPP(in_channels, channels, dropout),
            _conv_bn_relu(channels, channels, 3),
            nn.Conv2d(channels, num_classes, 1),
        )


class DeepLabV3(nn.Module):
    """`backbone` (stages named stage1.. or layer1..) then the head, upsampled bilinearly to the
    input's size."""

    def __init__(self, stem: nn.Module, stages: dict[str, nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        for name, stage in stages.items():
            self.add_module(name, stage)
        self.stage_names = tuple(stages)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        features = self.stem(x)
        for name in self.stage_names:
            features = getattr(self, name)(features)
        logits = self.head(features)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion, 3x3 depthwise, linear 1x1 projection (ReLU6)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.residual = stride == 1 and in_channels == out_channels
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


def _check_size(image_size: int) -> None:
    if image_size < 16:
        raise ValueError(f"image_size {image_size} is too small for DeepLabV3 (minimum 16)")


_BOUNDS = {
    "num_classes": Bound(2, 1000),
    "image_size": Bound(16, 1024),
    "width": Bound(4, 256),
    "dropout": Bound(0.0, 0.9, integer=False),
}


@register_model(taps=("layer1", "layer2", "layer3"), bounds=_BOUNDS, task=SEGMENTATION_TASK)
def deeplabv3_resnet_mini(
    num_classes: int = 11,
    in_channels: int = 3,
    image_size: int = 64,
    width: int = 16,
    dropout: float = 0.1,
) -> nn.Module:
    """DeepLabV3 on a small BatchNorm ResNet (stride 8, two BasicBlocks a stage): the CPU-sized
    segmentation teacher; per-pixel logits [N, K, H, W]."""
    _check_size(image_size)
    stem = _conv_bn_relu(in_channels, width, 3)
    widths = (width, 2 * width, 4 * width)
    stages, planes = {}, width
    for index, out_planes in enumerate(widths):
        stages[f"layer{index + 1}"] = nn.Sequential(
            BasicBlock(planes, out_planes, 2), BasicBlock(out_planes, out_planes, 1)
        )
        planes = out_planes
    return DeepLabV3(stem, stages, DeepLabHead(planes, 4 * width, num_classes, dropout))


@register_model(taps=("stage1", "stage2", "stage3"), bounds=_BOUNDS, task=SEGMENTATION_TASK)
def deeplabv3_mobilenet_mini(
    num_classes: int = 11,
    in_channels: int = 3,
    image_size: int = 64,
    width: int = 16,
    dropout: float = 0.1,
) -> nn.Module:
    """DeepLabV3 on MobileNetV2 inverted residuals (stride-2 stem as MobileNetV2's, then stages
    at strides 1, 2, 2: output stride 8; expansion 6): the student to deeplabv3_resnet_mini at
    the same width, about a quarter of its parameters."""
    _check_size(image_size)
    stem = _conv_bn_relu(in_channels, width, 3, stride=2)
    widths = (width, width + width // 2, 2 * width)
    stages, planes = {}, width
    for index, out_planes in enumerate(widths):
        stride = 1 if index == 0 else 2
        stages[f"stage{index + 1}"] = nn.Sequential(
            InvertedResidual(planes, out_planes, stride, 6),
            InvertedResidual(out_planes, out_planes, 1, 6),
        )
        planes = out_planes
    return DeepLabV3(stem, stages, DeepLabHead(planes, 2 * width, num_classes, dropout))
