"""ZSKT's toy experiment (Micaelli & Storkey 2019, §4.1): adversarial belief matching in 2-D.

A two-layer MLP teacher is trained on two interleaving half-moons. A two-layer MLP student never
sees them. Instead a handful of pseudo points, which are themselves the learnable parameters (no
generator), start in a clump away from the data; each step moves them to maximise
KL(teacher || student) and then trains the student to minimise it on them. The points end up
travelling along the places where the two decision boundaries disagree, and the student's
boundary follows the teacher's there. Every `frame_every` steps a PNG shows both boundaries and
the points; the frames are also assembled into an animated GIF.

The points are kept inside the plotted window: ReLU networks' logits grow linearly with the
distance from the data, so the KL can be made arbitrarily large by running off to infinity in a
direction where the two networks extrapolate differently, which would teach nothing about the
boundary near the data.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.losses import kl_divergence

WINDOW = (-2.5, 3.5, -2.5, 3.0)  # x_min, x_max, y_min, y_max: the data plus a margin


@dataclass
class ToyConfig:
    steps: int = 400
    frame_every: int = 20  # a PNG every this many steps (and at step 0 and the last step)
    points: int = 24  # learnable pseudo points
    point_steps: int = 1  # adversarial steps on the points per step (ZSKT's n_g)
    student_steps: int = 5  # student steps per step (ZSKT's n_s)
    lr_points: float = 0.05  # Adam on the points' coordinates
    lr_student: float = 0.01  # Adam
    temperature: float = 1.0  # of the KL; ZSKT uses 1
    teacher_hidden: int = 64
    student_hidden: int = 32
    samples: int = 400  # real points in the moons data set (the teacher's training data)
    noise: float = 0.12
    start: tuple[float, float] = (0.5, -1.5)  # centre of the points' initial clump, below the data
    seed: int = 0
    gif: bool = True


@dataclass
class ToyResult:
    teacher_accuracy: float  # on the moons
    student_accuracy: float  # on the moons, which the student never saw
    agreement: float  # teacher-student agreement over the whole plotted window
    frames: list[Path] = field(default_factory=list)
    animation: Path | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def make_moons(samples: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaving half circles (classes 0 and 1) with Gaussian noise, as in scikit-learn."""
    generator = torch.Generator().manual_seed(seed)
    upper = samples // 2
    angles = torch.cat(
        [torch.linspace(0, math.pi, upper), torch.linspace(0, math.pi, samples - upper)]
    )
    first = torch.stack([torch.cos(angles[:upper]), torch.sin(angles[:upper])], dim=1)
    second = torch.stack([1 - torch.cos(angles[upper:]), 0.5 - torch.sin(angles[upper:])], dim=1)
    points = torch.cat([first, second]) + noise * torch.randn(samples, 2, generator=generator)
    labels = torch.cat([torch.zeros(upper), torch.ones(samples - upper)]).long()
    return points, labels


def two_layer_mlp(hidden: int, classes: int = 2) -> nn.Module:
    return nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def train_teacher(
    points: torch.Tensor, labels: torch.Tensor, hidden: int, steps: int = 500
) -> nn.Module:
    """Full-batch Adam on the moons; reaches 100% in about a second.

    Label smoothing keeps the teacher calibrated: trained to certainty, its logit gaps reach
    ~70 across the window, both softmaxes saturate to exactly 0/1 in float32 away from the
    boundary, and the KL there has no gradient to move a pseudo point with.
    """
    teacher = two_layer_mlp(hidden)
    optimizer = torch.optim.Adam(teacher.parameters(), lr=0.01)
    for _ in range(steps):
        loss = F.cross_entropy(teacher(points), labels, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    teacher.eval().requires_grad_(False)
    return teacher


def _grid(resolution: int = 200) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    x_min, x_max, y_min, y_max = WINDOW
    xs, ys = np.meshgrid(
        np.linspace(x_min, x_max, resolution), np.linspace(y_min, y_max, resolution)
    )
    return xs, ys, torch.as_tensor(np.stack([xs.ravel(), ys.ravel()], 1), dtype=torch.float32)


@torch.no_grad()
def _accuracy(model: nn.Module, points: torch.Tensor, labels: torch.Tensor) -> float:
    return (model(points).argmax(1) == labels).float().mean().item()


def render_frame(
    teacher: nn.Module,
    student: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    pseudo: torch.Tensor,
    title: str,
) -> bytes:
    """PNG: teacher's decision regions and boundary (solid), the student's boundary (dashed),
    the real data (faint, never shown to the student) and the pseudo points (stars)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    xs, ys, grid = _grid()
    with torch.no_grad():
        teacher_p = F.softmax(teacher(grid), 1)[:, 1].view(xs.shape).numpy()
        student_p = F.softmax(student(grid), 1)[:, 1].view(xs.shape).numpy()
    figure = Figure(figsize=(6, 5), dpi=80)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    axes.contourf(xs, ys, teacher_p, levels=[0, 0.5, 1], colors=["#c6dbef", "#fdd0a2"], alpha=0.8)
    axes.contour(xs, ys, teacher_p, levels=[0.5], colors="black", linewidths=1.5)
    axes.contour(xs, ys, student_p, levels=[0.5], colors="tab:red", linewidths=1.5, linestyles="--")
    points, labels = data
    axes.scatter(
        points[:, 0], points[:, 1], c=labels.numpy(), cmap="coolwarm", s=6, alpha=0.25, linewidths=0
    )
    axes.scatter(
        pseudo[:, 0], pseudo[:, 1], marker="*", s=120, c="gold", edgecolors="black", linewidths=0.7
    )
    axes.set_xlim(WINDOW[0], WINDOW[1])
    axes.set_ylim(WINDOW[2], WINDOW[3])
    axes.set_title(title, fontsize=10)
    axes.text(
        0.01,
        0.01,
        "teacher boundary: solid   student boundary: dashed   pseudo points: stars",
        transform=axes.transAxes,
        fontsize=7,
    )
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_gif(frames: list[Path], path: Path, milliseconds_per_frame: int = 250) -> Path:
    """An animated GIF of the PNG frames (Pillow, which matplotlib already depends on)."""
    from PIL import Image

    images = [Image.open(frame).convert("RGB") for frame in frames]
    images[0].save(
        path, save_all=True, append_images=images[1:], duration=milliseconds_per_frame, loop=0
    )
    return path


@contextmanager
def _single_thread() -> Iterator[None]:
    """Networks of a few hundred weights gain nothing from threads, and on a busy CPU the
    thread pool's synchronisation made the whole run ~8x slower (measured: 129 s vs 16 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_toy(
    out_dir: Path,
    config: ToyConfig | None = None,
    on_frame: Callable[[int, Path], None] | None = None,
) -> ToyResult:
    """Run the toy experiment, writing frame_NNNN.png (and toy.gif) into `out_dir`."""
    with _single_thread():
        return _run(out_dir, config or ToyConfig(), on_frame)


def _run(
    out_dir: Path, config: ToyConfig, on_frame: Callable[[int, Path], None] | None
) -> ToyResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    data = make_moons(config.samples, config.noise, config.seed)
    teacher = train_teacher(*data, hidden=config.teacher_hidden)
    student = two_layer_mlp(config.student_hidden)
    pseudo = nn.Parameter(torch.tensor(config.start) + 0.15 * torch.randn(config.points, 2))
    optimizer_points = torch.optim.Adam([pseudo], lr=config.lr_points)
    optimizer_student = torch.optim.Adam(student.parameters(), lr=config.lr_student)
    low = torch.tensor([WINDOW[0], WINDOW[2]])
    high = torch.tensor([WINDOW[1], WINDOW[3]])
    _, _, grid = _grid(100)
    result = ToyResult(0.0, 0.0, 0.0)

    def frame(step: int, kl: float) -> None:
        with torch.no_grad():
            agree = (teacher(grid).argmax(1) == student(grid).argmax(1)).float().mean().item()
        result.history.append({"step": step, "kl": kl, "agreement": agree})
        path = out_dir / f"frame_{step:04d}.png"
        path.write_bytes(
            render_frame(
                teacher,
                student,
                data,
                pseudo.detach(),
                f"step {step}: KL on pseudo points {kl:.3f}, agreement on the window {agree:.0%}",
            )
        )
        result.frames.append(path)
        if on_frame:
            on_frame(step, path)

    with torch.no_grad():
        kl = kl_divergence(teacher(pseudo), student(pseudo), config.temperature).item()
    frame(0, kl)
    for step in range(1, config.steps + 1):
        # the points: move to where the student disagrees with the teacher
        student.requires_grad_(False)
        for _ in range(config.point_steps):
            loss_points = -kl_divergence(teacher(pseudo), student(pseudo), config.temperature)
            optimizer_points.zero_grad(set_to_none=True)
            loss_points.backward()
            optimizer_points.step()
            with torch.no_grad():
                pseudo.copy_(torch.maximum(torch.minimum(pseudo, high), low))
        student.requires_grad_(True)
        # the student: match the teacher where the points now are
        points = pseudo.detach()
        with torch.no_grad():
            teacher_logits = teacher(points)
        for _ in range(config.student_steps):
            loss_student = kl_divergence(teacher_logits, student(points), config.temperature)
            optimizer_student.zero_grad(set_to_none=True)
            loss_student.backward()
            optimizer_student.step()
        if step % config.frame_every == 0 or step == config.steps:
            frame(step, loss_student.item())

    result.teacher_accuracy = _accuracy(teacher, *data)
    result.student_accuracy = _accuracy(student, *data)
    result.agreement = result.history[-1]["agreement"]
    if config.gif:
        result.animation = write_gif(result.frames, out_dir / "toy.gif")
    return result
