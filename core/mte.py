"""Mean Transition Error (ZSKT, Micaelli & Storkey 2019, Algorithm 2): do two networks agree
near their decision boundaries, not only on the data?

Take the first N evaluation images on which network A (the student) and network B (the
teacher) predict the same class i. For every other class j, walk the image towards j by plain
gradient descent on A's cross-entropy to j, x <- x - xi * grad_x CE(A(x), j) (xi = 1, no sign,
no projection), and record p_j under A and under B before each of the K steps. Those are the
transition curves; MTE is the mean of |p_j^B - p_j^A| over images, target classes and steps.
A student that has learned the teacher's beliefs moves from i to j when the teacher does.

The released code walked one (image, target) pair at a time; here all N x (C-1) pairs form one
batch, cut into chunks of `chunk_size` rows to bound memory. The cross-entropy is summed over
the batch so every row's step is exactly its own gradient (a mean would divide xi by the batch).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.evaluation import predict

PAPER_IMAGES = 1000
PAPER_STEPS = 100


@dataclass(frozen=True)
class TransitionCurves:
    """Transition curves averaged over (image, target class) pairs.

    Arrays have one entry per recorded step (K of them; entry 0 is the untouched image). The
    standard errors are over pairs: std / sqrt(pairs).
    """

    mte: float
    images: int  # matching images used
    pairs: int  # images x (classes - 1)
    step_size: float
    student_mean: np.ndarray
    student_stderr: np.ndarray
    teacher_mean: np.ndarray
    teacher_stderr: np.ndarray

    @property
    def steps(self) -> int:
        return len(self.student_mean)

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-ready values, e.g. for a job's result."""
        return {
            "mte": self.mte,
            "images": self.images,
            "pairs": self.pairs,
            "steps": self.steps,
            "step_size": self.step_size,
            "student_mean": self.student_mean.tolist(),
            "student_stderr": self.student_stderr.tolist(),
            "teacher_mean": self.teacher_mean.tolist(),
            "teacher_stderr": self.teacher_stderr.tolist(),
        }


def matching_images(
    student: nn.Module, teacher: nn.Module, images: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `count` images on which both networks predict the same class, and that class.

    Fewer come back when fewer agree; the caller decides whether that is enough.
    """
    student_classes = predict(student, images)
    agree = (student_classes == predict(teacher, images)).nonzero().flatten()[:count]
    return images[agree], student_classes[agree]


def _walk(
    student: nn.Module,
    teacher: nn.Module,
    start: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
    step_size: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """p_target under both networks before each of `steps` descent steps on CE(student(x), target).

    Returns two [rows, steps] tensors. Only the input receives gradients: autograd.grad asks for
    d loss / d x alone, so neither network's parameters are touched.
    """
    x = start.clone()
    rows = torch.arange(len(targets), device=start.device)
    student_p, teacher_p = [], []
    for _ in range(steps):
        x.requires_grad_(True)
        logits = student(x)
        with torch.no_grad():
            teacher_p.append(F.softmax(teacher(x), dim=1)[rows, targets])
            student_p.append(F.softmax(logits.detach(), dim=1)[rows, targets])
        loss = F.cross_entropy(logits, targets, reduction="sum")
        (gradient,) = torch.autograd.grad(loss, x)
        x = (x.detach() - step_size * gradient).detach()
    return torch.stack(student_p, dim=1), torch.stack(teacher_p, dim=1)


def transition_curves(
    student: nn.Module,
    teacher: nn.Module,
    images: torch.Tensor,
    num_images: int = PAPER_IMAGES,
    steps: int = PAPER_STEPS,
    step_size: float = 1.0,
    chunk_size: int = 2048,
) -> TransitionCurves:
    """Transition curves and MTE of `student` (network A) against `teacher` (network B).

    `images` are real evaluation images in the networks' normalised input space; labels are not
    needed. Both networks are evaluated in eval mode and left in the mode they came in.
    Raises ValueError when the networks agree on no image.
    """
    modes = (student.training, teacher.training)
    student.eval()
    teacher.eval()
    try:
        device = next(student.parameters()).device
        chosen, classes = matching_images(student, teacher, images, num_images)
        if len(chosen) == 0:
            raise ValueError("the student and the teacher agree on none of the images")
        num_classes = _class_count(student, chosen[:1].to(device))
        # every (image, j != i) pair: offsets 1..C-1 added modulo C to the agreed class
        offsets = torch.arange(1, num_classes)
        targets = ((classes[:, None] + offsets[None, :]) % num_classes).flatten()
        starts = chosen.repeat_interleave(num_classes - 1, dim=0)
        student_rows, teacher_rows = [], []
        for first in range(0, len(targets), chunk_size):
            chunk = slice(first, first + chunk_size)
            student_p, teacher_p = _walk(
                student,
                teacher,
                starts[chunk].to(device),
                targets[chunk].to(device),
                steps,
                step_size,
            )
            student_rows.append(student_p.cpu().double())
            teacher_rows.append(teacher_p.cpu().double())
    finally:
        student.train(modes[0])
        teacher.train(modes[1])
    student_all, teacher_all = torch.cat(student_rows), torch.cat(teacher_rows)
    pairs = len(student_all)
    root = np.sqrt(pairs)
    return TransitionCurves(
        mte=(teacher_all - student_all).abs().mean().item(),
        images=len(chosen),
        pairs=pairs,
        step_size=step_size,
        student_mean=student_all.mean(0).numpy(),
        student_stderr=(student_all.std(0, unbiased=pairs > 1).nan_to_num(0) / root).numpy(),
        teacher_mean=teacher_all.mean(0).numpy(),
        teacher_stderr=(teacher_all.std(0, unbiased=pairs > 1).nan_to_num(0) / root).numpy(),
    )


@torch.no_grad()
def _class_count(model: nn.Module, image: torch.Tensor) -> int:
    return int(model(image).shape[1])


def plot_transition_curves(curves: TransitionCurves, title: str = "") -> bytes:
    """PNG of the mean p_j curves of student and teacher with +-2 standard-error bands."""
    # The object-oriented API with an Agg canvas: no pyplot global state and no display, so it is
    # safe in a headless worker and from several threads at once.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    steps = np.arange(curves.steps)
    for label, mean, stderr, colour in (
        ("teacher (B)", curves.teacher_mean, curves.teacher_stderr, "tab:blue"),
        ("student (A)", curves.student_mean, curves.student_stderr, "tab:orange"),
    ):
        axes.plot(steps, mean, label=label, color=colour)
        axes.fill_between(steps, mean - 2 * stderr, mean + 2 * stderr, color=colour, alpha=0.25)
    axes.set_xlabel(f"adversarial step on the student (step size {curves.step_size:g})")
    axes.set_ylabel("p_j (probability of the target class)")
    axes.set_ylim(-0.02, 1.02)
    axes.set_title(
        title
        or f"transition curves: MTE {curves.mte:.3f} ({curves.images} images, {curves.pairs} pairs)"
    )
    axes.legend(loc="lower right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
