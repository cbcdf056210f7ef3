"""The evaluation report of a distilled student on a labelled set (never used for training)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from core.datasets import LabelledImages
from core.evaluation import accuracy, agreement_on, predict
from core.mte import plot_transition_curves, transition_curves
from core.segmentation import SEGMENTATION_TASK, SegmentationScores, confusion_matrix


@dataclass
class EvaluationReport:
    numbers: dict[str, Any]
    transition_plot: bytes | None


def evaluate(
    student: nn.Module, teacher: nn.Module, data: LabelledImages, mte_images: int, mte_steps: int
) -> EvaluationReport:
    """Last-iterate accuracies and agreement, and MTE with its transition curves; for a set of
    masks, mIoU and per-class IoU of both networks instead (MTE walks single-label decisions)."""
    if data.task_type == SEGMENTATION_TASK:
        return EvaluationReport(segmentation_report(student, teacher, data), None)
    numbers: dict[str, Any] = {
        "images": len(data.labels),
        "student_accuracy": accuracy(student, data.images, data.labels),
        "teacher_accuracy": accuracy(teacher, data.images, data.labels),
        "agreement": agreement_on(student, teacher, data.images),
    }
    plot = None
    if mte_images > 0:
        try:
            curves = transition_curves(
                student, teacher, data.images, num_images=mte_images, steps=mte_steps
            )
        except ValueError as error:  # the networks agree on no image
            numbers["mte_skipped"] = str(error)
        else:
            numbers["mte"] = curves.as_dict()
            plot = plot_transition_curves(curves, title="student (A) vs teacher (B)")
    return EvaluationReport(numbers, plot)


def segmentation_report(
    student: nn.Module, teacher: nn.Module, data: LabelledImages
) -> dict[str, Any]:
    """Teacher and student mIoU, per-class IoU and pixel accuracy on the whole set (last
    iterate), their pixel agreement, and the student's share of the teacher's mIoU."""
    with torch.no_grad():
        num_classes = int(teacher.eval()(data.images[:1].to(_device(teacher))).shape[1])
    # each network's masks once: its scores and the agreement are all read off them
    predicted = {
        name: predict(model, data.images, batch_size=256)
        for name, model in (("teacher", teacher), ("student", student))
    }
    scores = {
        name: SegmentationScores.from_confusion(confusion_matrix(masks, data.labels, num_classes))
        for name, masks in predicted.items()
    }
    numbers: dict[str, Any] = {"images": len(data.labels), "task_type": SEGMENTATION_TASK}
    for name, score in scores.items():
        numbers[f"{name}_miou"] = score.mean_iou
        numbers[f"{name}_pixel_accuracy"] = score.pixel_accuracy
        numbers[f"{name}_per_class_iou"] = score.per_class_iou
    agreeing = predicted["teacher"] == predicted["student"]
    numbers["pixel_agreement"] = agreeing.float().mean().item()
    teacher_miou = scores["teacher"].mean_iou
    numbers["miou_ratio"] = scores["student"].mean_iou / teacher_miou if teacher_miou else None
    return numbers


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
