"""The evaluation report of a distilled student on a labelled set (never used for training)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from core.datasets import LabelledImages
from core.evaluation import accuracy, agreement_on
from core.mte import plot_transition_curves, transition_curves


@dataclass
class EvaluationReport:
    numbers: dict[str, Any]
    transition_plot: bytes | None


def evaluate(
    student: nn.Module, teacher: nn.Module, data: LabelledImages, mte_images: int, mte_steps: int
) -> EvaluationReport:
    """Last-iterate accuracies and agreement, and MTE with its transition curves."""
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
