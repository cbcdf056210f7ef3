"""Held-out accuracy against wall time for one generator method (DAFL, DFQ) on the MNIST digits.

    PYTHONPATH=. .venv/bin/python bench/generator_methods.py dafl --teacher lenet5 \
        --iterations 400 --batch-size 128 --hp generator_width=0.25 --every 50

Teachers are the tests' (tests/conftest.py): `lenet5` (8 epochs) or `resnet8` (width 8, 6 epochs)
on the first 4 000 digits, cached under --cache. The student is `lenet5_half`. Every `--every`
iterations it prints the student's accuracy on the 1 000 held-out digits and the training
seconds so far (the evaluations' own time is left out). One thread unless --threads says more.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from core.datasets import LabelledImages, mnist_digits
from core.evaluation import accuracy
from core.loop import distill
from core.method_registry import get_method
from core.models import build
from core.training import DistillationTask, Progress, TrainingHooks
from core.training_supervised import train_classifier

TEACHERS: dict[str, tuple[dict[str, Any], int]] = {
    "lenet5": ({}, 8),
    "resnet8": ({"width": 8}, 6),
}


def teacher(name: str, train: LabelledImages, cache: Path) -> torch.nn.Module:
    kwargs, epochs = TEACHERS[name]
    path = cache / f"{name}.safetensors"
    model = build(name, **kwargs)
    if path.exists():
        model.load_state_dict(load_file(str(path)))
        return model.eval()
    torch.manual_seed(0)
    model = train_classifier(model, train, epochs=epochs, seed=0)
    cache.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(path))
    return model.eval()


class HeldOutCurve(TrainingHooks):
    """The student's held-out accuracy every `every` steps, against training seconds."""

    def __init__(self, student: torch.nn.Module, heldout: LabelledImages, every: int) -> None:
        self.student, self.heldout, self.every = student, heldout, every
        self.started = time.perf_counter()
        self.evaluating = 0.0
        self.points: list[tuple[int, float, float]] = []

    def on_log(self, step: int, metrics: dict[str, float], progress: Progress) -> None:
        if step % self.every:
            return
        began = time.perf_counter()
        score = accuracy(self.student, self.heldout.images, self.heldout.labels)
        seconds = began - self.started - self.evaluating
        self.evaluating += time.perf_counter() - began
        self.points.append((step, seconds, score))
        shown = {name: round(value, 4) for name, value in metrics.items()}
        print(
            f"step {step:5d}  {seconds:6.1f} s  held-out {100 * score:5.1f}%  {shown}", flush=True
        )


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("method")
    parser.add_argument("--teacher", choices=sorted(TEACHERS), default="resnet8")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--budget", type=float, default=None, help="budget_seconds")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hp", nargs="*", default=[], help="hyperparameters as key=value")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/dfkd-bench-teachers"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    train, heldout = mnist_digits(seed=0).split(4000)
    model = teacher(args.teacher, train, args.cache)
    print(
        f"teacher {args.teacher}: held-out {100 * accuracy(model, heldout.images, heldout.labels):.1f}%"
    )
    student = build("lenet5_half")
    hyperparameters = dict(item.split("=", 1) for item in args.hp)
    config = get_method(args.method).build_config(
        {key: parse_value(value) for key, value in hyperparameters.items()},
        iterations=args.iterations,
        budget_seconds=args.budget,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    config.log_every = args.every
    curve = HeldOutCurve(student, heldout, args.every)
    result = distill(DistillationTask(model, student, (1, 32, 32), 10), config, curve)
    final = accuracy(result.student, heldout.images, heldout.labels)
    print(
        f"{args.method} {args.teacher} -> lenet5_half: held-out {100 * final:.1f}% after "
        f"{result.steps} iterations, {result.elapsed_seconds - curve.evaluating:.0f} s training"
    )


if __name__ == "__main__":
    main()
