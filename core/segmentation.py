"""Measuring segmentation networks: confusion matrices and intersection over union.

mIoU as DFAD's released evaluation computes it (docs/methods.md, "Segmentation"): per class,
the intersection and the union of the predicted and the true masks are summed over the whole
evaluation set before dividing, never averaged per image; pixels marked IGNORE_INDEX (255) in
the true masks count for nothing; the mean runs over the classes whose union is not empty
(present in the masks or predicted somewhere), so a class neither there nor predicted neither
helps nor hurts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.evaluation import predict

IGNORE_INDEX = 255  # a mask value that marks pixels without a class (void, uncertain edges)
SEGMENTATION_TASK = "segmentation"
CLASSIFICATION_TASK = "classification"


def task_of_output(output_shape: tuple[int, ...] | list[int]) -> str | None:
    """`classification` for [N, K] logits, `segmentation` for [N, K, H, W], None otherwise."""
    return {2: CLASSIFICATION_TASK, 4: SEGMENTATION_TASK}.get(len(output_shape))


def expected_logits_shape(
    batch: int, num_classes: int, input_shape: tuple[int, ...], task_type: str
) -> tuple[int, ...]:
    """[N, K] logits for a classifier, [N, K, H, W] at the input's size for segmentation."""
    if task_type == SEGMENTATION_TASK:
        return (batch, num_classes, *input_shape[1:])
    return (batch, num_classes)


def confusion_matrix(
    predicted: torch.Tensor, target: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """[K, K] pixel counts, rows the true class, columns the predicted one; pixels whose true
    class is IGNORE_INDEX are left out. Predictions and targets are integer masks of one shape."""
    if predicted.shape != target.shape:
        raise ValueError(
            f"predicted {list(predicted.shape)} and true {list(target.shape)} masks differ"
        )
    valid = target != IGNORE_INDEX
    truth = target[valid].long()
    if truth.numel() and (truth.min() < 0 or truth.max() >= num_classes):
        raise ValueError(f"true masks hold classes outside 0..{num_classes - 1}")
    pairs = truth * num_classes + predicted[valid].long()
    return torch.bincount(pairs, minlength=num_classes * num_classes).view(num_classes, num_classes)


@dataclass(frozen=True)
class SegmentationScores:
    """Whole-set scores of one network's masks against the true ones."""

    per_class_iou: list[float | None]  # None: the class is neither in the masks nor predicted
    mean_iou: float
    pixel_accuracy: float

    @classmethod
    def from_confusion(cls, confusion: torch.Tensor) -> SegmentationScores:
        confusion = confusion.double()
        intersection = confusion.diag()
        union = confusion.sum(0) + confusion.sum(1) - intersection
        present = union > 0
        iou = torch.where(present, intersection / union.clamp_min(1), torch.zeros_like(union))
        per_class = [
            float(value) if is_present else None
            for value, is_present in zip(iou.tolist(), present.tolist(), strict=True)
        ]
        total = confusion.sum()
        return cls(
            per_class_iou=per_class,
            mean_iou=float(iou[present].mean()) if bool(present.any()) else 0.0,
            pixel_accuracy=float(intersection.sum() / total) if total > 0 else 0.0,
        )


def segmentation_scores(
    model: nn.Module, images: torch.Tensor, masks: torch.Tensor, num_classes: int
) -> SegmentationScores:
    """mIoU, per-class IoU and pixel accuracy of `model`'s masks (argmax of its per-pixel logits)
    on `images` against the true `masks` [N, H, W]."""
    return SegmentationScores.from_confusion(
        confusion_matrix(predict(model, images, batch_size=256), masks.cpu(), num_classes)
    )
