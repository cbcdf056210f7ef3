"""The GPU part of bench/speed.py: the papers' CIFAR pair (WRN-40-2 -> WRN-16-1, 32 px) on a GPU.

No CIFAR images exist here, so this measures speed only (the teacher is untrained: the arithmetic
is the same). For ZSKT and DFAD at the papers' generator widths and each batch size, the project's
loop (core.methods) under each variant:

    fp32        the CUDA defaults: no autocast (float32 matmuls, cuDNN's default TF32
                convolutions), channels_last, cuDNN autotuning, fused optimisers
    bf16        the same with bf16 autocast, which an operator may turn on (off by default: it
                rounds away the small differences the losses measure, docs/methods.md)
    compile     bf16 + torch.compile of the forward passes
    cudagraphs  bf16 + torch.compile(mode="reduce-overhead"): the compiled passes replay CUDA graphs

Each run is one `distill` call: `--iterations` warm-up iterations (compilation included, timed
apart), then as many timed ones between two log points (each log point waits for the device).
Recorded: iterations/s, pseudo-samples/s, the projected time of the paper's whole schedule (ZSKT
80 000 iterations, DFAD 25 000), counted matmul/conv FLOPs per iteration (FlopCounterMode, on the
uncompiled variant), utilisation against matmul peaks measured on the same device (bf16, TF32,
float32), and peak device memory. Then the student's training step alone (forward, KL to fixed
teacher logits, backward, fused Adam) for ZSKT's student and the largest pair in the registry
(ResNet-34 -> ResNet-18) at the largest batch: eager float32, bf16, compiled, and the whole step
captured in one CUDA graph, against the bf16 peak. Everything runs inside `--budget-seconds`;
what did not fit is recorded as skipped, and an error in one measurement is recorded, not fatal.

`--device cpu --tiny` runs the same code at toy sizes (the CPU dry run of bench/gpu_check.sh); its
figures are a CPU's and say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from core.acceleration import Acceleration
from core.loop import distill
from core.losses import kl_divergence
from core.methods import dfad, zskt
from core.models import build, get_spec
from core.training import DistillationTask, Progress, TrainingHooks
from core.utilisation import PEAK_KINDS, peak_flops

VARIANTS: dict[str, Acceleration] = {
    "fp32": Acceleration(),
    "bf16": Acceleration(bf16_autocast=True),
    "compile": Acceleration(bf16_autocast=True, compile=True),
    "cudagraphs": Acceleration(bf16_autocast=True, compile=True, compile_mode="reduce-overhead"),
}
# the variants that compile are slow to start: measured at the largest batch only
COMPILED = ("compile", "cudagraphs")
METHODS = {"zskt": zskt.ZSKTConfig, "dfad": dfad.DFADConfig}


@dataclass(frozen=True)
class Pair:
    """A teacher and a student from the registry, at 3 x 32 x 32 and 10 classes."""

    label: str
    teacher: tuple[str, dict[str, Any]]
    student: tuple[str, dict[str, Any]]

    def task(self, device: str) -> DistillationTask:
        torch.manual_seed(0)
        (teacher_name, teacher_kwargs), (student_name, student_kwargs) = self.teacher, self.student
        return DistillationTask(
            build(teacher_name, **teacher_kwargs).to(device),
            build(student_name, **student_kwargs).to(device),
            (3, 32, 32),
            10,
            get_spec(teacher_name).taps,
            get_spec(student_name).taps,
        )


PAPER_PAIR = Pair(
    "WRN-40-2 -> WRN-16-1",
    ("wrn", {"depth": 40, "widen_factor": 2}),
    ("wrn", {"depth": 16, "widen_factor": 1}),
)
LARGEST_PAIR = Pair("ResNet-34 -> ResNet-18", ("resnet34", {}), ("resnet18", {}))
TINY_PAIR = Pair(
    "WRN-10-1 -> WRN-10-1 (dry run)",
    ("wrn", {"depth": 10, "widen_factor": 1}),
    ("wrn", {"depth": 10, "widen_factor": 1}),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("GPU part (--device cuda, or --gpu-path on any device)")
    group.add_argument(
        "--gpu-path", action="store_true", help="run this part on --device even without CUDA"
    )
    group.add_argument("--gpu-methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    group.add_argument("--gpu-batch-sizes", type=int, nargs="+", default=[128, 256])
    group.add_argument("--gpu-variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    group.add_argument(
        "--gpu-iterations", type=int, default=30, help="warm-up iterations, then as many timed"
    )
    group.add_argument("--step-repeats", type=int, default=30, help="student steps per timing")
    group.add_argument("--peak-size", type=int, default=8192, help="n of the n x n x n matmuls")
    group.add_argument("--budget-seconds", type=float, default=240)
    group.add_argument(
        "--tiny", action="store_true", help="toy sizes and narrow generators: a dry run"
    )


class TimedHooks(TrainingHooks):
    """Keeps the progress of every log point (each one waits for the device: `.item()`)."""

    def __init__(self) -> None:
        self.progress: list[Progress] = []

    def on_log(self, step: int, metrics: dict[str, float], progress: Progress) -> None:
        self.progress.append(progress)


class Budget:
    def __init__(self, seconds: float) -> None:
        self.ends = time.monotonic() + seconds

    def left(self) -> float:
        return self.ends - time.monotonic()


def measured(
    budget: Budget, needs_seconds: float, work: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """`work()`'s figures, or why there are none (out of time, or the error it raised)."""
    if budget.left() < needs_seconds:
        return {"skipped": f"time budget: {budget.left():.0f} s left"}
    try:
        return work()
    except Exception as error:  # a variant that breaks is a finding, not the end of the run
        traceback.print_exc()
        return {"error": f"{type(error).__name__}: {error}"[:2000]}
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def run_loop(
    device: str,
    pair: Pair,
    method: str,
    batch_size: int,
    acceleration: Acceleration,
    iterations: int,
    generator_width: float | None,
) -> dict[str, Any]:
    config_type = METHODS[method]
    config = config_type(
        iterations=2 * iterations,
        batch_size=batch_size,
        device=device,
        log_every=iterations,
        generator_width=generator_width,
    )
    reset_peak_memory(device)
    hooks = TimedHooks()
    began = time.perf_counter()
    distill(pair.task(device), config, hooks, acceleration=acceleration)
    wall = time.perf_counter() - began
    warm, timed = hooks.progress
    samples_per_iteration = config.batch_size * (
        config.student_steps + config.generator_steps if method == "dfad" else 1
    )
    iterations_per_second = timed.samples_per_second / samples_per_iteration
    schedule = config_type().iterations
    return {
        "iterations_per_second": iterations_per_second,
        "pseudo_samples_per_second": timed.samples_per_second,
        "paper_schedule_iterations": schedule,
        "projected_schedule_hours": schedule / iterations_per_second / 3600,
        "flops_per_iteration": (
            timed.flops_per_second / iterations_per_second if timed.flops_per_second else None
        ),
        "warm_up_seconds": warm.elapsed_seconds,
        "wall_seconds": wall,
        "peak_memory_bytes": peak_memory(device),
        "effective_config": {
            "generator_width": config.effective(10, (3, 32, 32)).generator_width,
            "batch_size": batch_size,
        },
    }


def reset_peak_memory(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: str) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.startswith("cuda") else None


def student_step(
    device: str, pair: Pair, batch_size: int, variant: str, repeats: int
) -> dict[str, Any]:
    """The student's training step alone: forward, KL to fixed teacher logits, backward, fused
    Adam. `graph`: the whole step captured once in a CUDA graph and replayed."""
    target = torch.device(device)
    task = pair.task(device)
    inputs = torch.randn(batch_size, *task.input_shape, device=target)
    with torch.no_grad():
        teacher_logits = task.teacher.eval()(inputs).float()
    student = task.student.train()
    acceleration = {
        "fp32": Acceleration(bf16_autocast=False),
        "bf16": Acceleration(),
        "compile": Acceleration(compile=True),
        "graph": Acceleration(),
    }[variant].resolved(target)
    acceleration.prepare(target)
    forward = acceleration.forward_of(student, target)
    capturable = {"capturable": True} if variant == "graph" else {}
    optimizer = torch.optim.Adam(
        student.parameters(), lr=1e-4, **acceleration.optimizer_options(), **capturable
    )

    def step() -> None:
        loss = kl_divergence(teacher_logits, forward(inputs))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=variant != "graph")

    reset_peak_memory(device)
    counter = FlopCounterMode(display=False)
    if variant == "compile":
        step()  # compile before counting: the counter sees the eager ops of the first call
        step()
    else:
        with counter:
            step()
    flops = counter.get_total_flops() or None
    run = step
    if variant == "graph":
        run = captured(step, target)
    for _ in range(3):
        run()
    seconds = time_per_call(run, target, repeats)
    return {
        "seconds_per_step": seconds,
        "flops_per_step": flops,
        "flops_per_second": flops / seconds if flops else None,
        "peak_memory_bytes": peak_memory(device),
    }


def captured(step: Callable[[], None], device: torch.device) -> Callable[[], None]:
    """`step` recorded once into a CUDA graph (warmed up on a side stream first, as the CUDA
    graphs notes of PyTorch ask); the returned call replays it."""
    if device.type != "cuda":
        raise RuntimeError("CUDA graphs need a CUDA device")
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def time_per_call(run: Callable[[], None], device: torch.device, repeats: int) -> float:
    """Median seconds per call over three bursts of `repeats` calls (device events on CUDA)."""
    times = []
    for _ in range(3):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(repeats):
                run()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1000 / repeats)
        else:
            began = time.perf_counter()
            for _ in range(repeats):
                run()
            times.append((time.perf_counter() - began) / repeats)
    return statistics.median(times)


def device_facts(device: str) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    if device.startswith("cuda"):
        properties = torch.cuda.get_device_properties(device)
        facts |= {
            "device": properties.name,
            "memory_bytes": properties.total_memory,
            "multiprocessors": properties.multi_processor_count,
            "capability": f"{properties.major}.{properties.minor}",
        }
    else:
        facts["device"] = f"CPU ({torch.get_num_threads()} threads): a dry run, not a GPU figure"
    return facts


# seconds a measurement must have left in the budget to start: compiles take minutes
NEEDS_SECONDS = {"fp32": 15, "bf16": 15, "compile": 90, "cudagraphs": 90, "graph": 10}


def gpu_benchmark(
    device: str,
    args: argparse.Namespace,
    save: Callable[[dict[str, Any]], None] = lambda figures: None,
) -> dict[str, Any]:
    """Every figure listed in the module's docstring; `save` gets the figures so far after each
    measurement, so a run stopped from outside keeps what it measured."""
    budget = Budget(args.budget_seconds)
    pair = TINY_PAIR if args.tiny else PAPER_PAIR
    step_pairs = [TINY_PAIR] if args.tiny else [PAPER_PAIR, LARGEST_PAIR]
    width = 0.125 if args.tiny else None  # None: the papers' widths, chosen for a CUDA device
    loops: dict[str, dict[str, dict[str, Any]]] = {}
    steps: dict[str, dict[str, dict[str, Any]]] = {}
    figures: dict[str, Any] = {
        "facts": device_facts(device),
        "pair": pair.label,
        "peaks": {},
        "loops": loops,
        "student_steps": steps,
    }
    for kind in PEAK_KINDS:
        figures["peaks"][kind] = peak_flops(device, size=args.peak_size, kind=kind)
        print(f"peak {kind}: {figures['peaks'][kind] / 1e12:.2f} TFLOP/s", flush=True)

    def measure_loops(plan: list[tuple[str, int, str]]) -> None:
        for method, batch, variant in plan:
            # ZSKT's width counts channels, DFAD's multiplies the paper's
            generator_width = (round(width * 128) if method == "zskt" else width) if width else None
            row = measured(
                budget,
                NEEDS_SECONDS[variant],
                lambda m=method, b=batch, v=variant, g=generator_width: run_loop(
                    device, pair, m, b, VARIANTS[v], args.gpu_iterations, g
                ),
            )
            loops.setdefault(method, {})[f"{variant} @ {batch}"] = row
            fill_flops(loops)
            save(figures)
            print(method, variant, batch, row, flush=True)

    largest = max(args.gpu_batch_sizes)
    eager = [v for v in args.gpu_variants if v not in COMPILED]
    compiled = [v for v in args.gpu_variants if v in COMPILED]
    # cheapest and most telling first; the compiled variants (minutes of compiling each) last,
    # at the largest batch only
    measure_loops(
        [(m, b, v) for v in eager for m in args.gpu_methods for b in sorted(args.gpu_batch_sizes)]
    )
    student_steps(device, step_pairs, largest, args, budget, steps, lambda: save(figures))
    measure_loops([(m, largest, v) for m in args.gpu_methods for v in compiled])
    figures["facts"]["budget_seconds_left"] = round(budget.left())
    save(figures)
    return figures


def student_steps(
    device: str,
    pairs: list[Pair],
    batch: int,
    args: argparse.Namespace,
    budget: Budget,
    results: dict[str, dict[str, Any]],
    saved: Callable[[], None],
) -> None:
    variants = ["fp32", "bf16"] + (["compile"] if "compile" in args.gpu_variants else [])
    variants += ["graph"] if device.startswith("cuda") else []
    for variant in variants:
        for pair in pairs:
            row = measured(
                budget,
                NEEDS_SECONDS[variant],
                lambda p=pair, v=variant: student_step(device, p, batch, v, args.step_repeats),
            )
            rows = results.setdefault(f"{pair.student[0]} ({pair.label}) @ {batch}", {})
            rows[variant] = row
            counted = rows.get("bf16", {}).get("flops_per_step")
            if variant == "compile" and "seconds_per_step" in row and counted:
                # the compiled step does the eager step's math; its kernels escape the counter
                row |= {
                    "flops_per_step": counted,
                    "flops_per_second": counted / row["seconds_per_step"],
                }
            saved()
            print("student step", pair.label, variant, row, flush=True)


def fill_flops(loops: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Compiled runs are not counted (their kernels bypass the counter); the math is the same as
    the eager bf16 run's at that batch, so they take its count."""
    for rows in loops.values():
        for name, row in rows.items():
            variant, batch = name.split(" @ ")
            if (
                variant in COMPILED
                and row.get("flops_per_iteration") is None
                and "error" not in row
            ):
                counted = rows.get(f"bf16 @ {batch}", {}).get("flops_per_iteration")
                row["flops_per_iteration"] = counted


def utilisation(flops_per_second: float | None, peak: float) -> str:
    return f"{100 * flops_per_second / peak:.1f}%" if flops_per_second and peak else "-"


def why_missing(row: dict[str, Any]) -> str:
    return str(row.get("skipped") or row.get("error"))


def gibibytes(row: dict[str, Any]) -> str:
    memory = row["peak_memory_bytes"]
    return "-" if memory is None else f"{memory / 2**30:.2f} GiB"


def table(
    groups: dict[str, dict[str, dict[str, Any]]],
    measured_key: str,
    cells: Callable[[dict[str, Any]], list[str]],
) -> list[str]:
    """Markdown rows: group, name, then the row's cells, or why it has none."""
    return [
        "| "
        + " | ".join([group, name, *(cells(row) if measured_key in row else [why_missing(row)])])
        + " |"
        for group, rows in groups.items()
        for name, row in rows.items()
    ]


def loop_cells(row: dict[str, Any], peaks: dict[str, float]) -> list[str]:
    flops = (row["flops_per_iteration"] or 0) * row["iterations_per_second"]
    return [
        f"{row['iterations_per_second']:.2f}",
        f"{row['pseudo_samples_per_second']:.0f}",
        f"{row['projected_schedule_hours']:.2f} h ({row['paper_schedule_iterations']} it)",
        utilisation(flops, peaks["bfloat16"]),
        utilisation(flops, peaks["tf32"]),
        gibibytes(row),
        f"{row['warm_up_seconds']:.1f}",
    ]


def step_cells(row: dict[str, Any], peaks: dict[str, float]) -> list[str]:
    rate = row["flops_per_second"]
    return [
        f"{1000 * row['seconds_per_step']:.2f}",
        "-" if rate is None else f"{rate / 1e12:.1f}",
        utilisation(rate, peaks["bfloat16"]),
        gibibytes(row),
    ]


def render_gpu(figures: dict[str, Any], command: str) -> str:
    facts, peaks = figures["facts"], figures["peaks"]
    lines = [
        f"Command: `{command}`; {facts['date']}, {facts['device']}, torch {facts['torch']} "
        f"(CUDA {facts['cuda']}). Matmul peaks measured on it (n x n x n, random data): "
        + ", ".join(f"{kind} {value / 1e12:.1f} TFLOP/s" for kind, value in peaks.items())
        + f". {figures['pair']}, 32 px, untrained teacher (speed only), the papers' generator "
        "widths. Utilisation = counted matmul/conv FLOPs x iterations/s over a peak.",
        "",
        "| method | variant @ batch | iterations/s | pseudo-samples/s | paper schedule | "
        "vs bf16 peak | vs TF32 peak | peak memory | warm-up s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += table(figures["loops"], "iterations_per_second", lambda row: loop_cells(row, peaks))
    lines += [
        "",
        "The student's training step alone (forward, KL to fixed teacher logits, backward, fused "
        "Adam); `graph` is the whole step captured once in a CUDA graph and replayed.",
        "",
        "| student @ batch | variant | ms/step | TFLOP/s | vs bf16 peak | peak memory |",
        "|---|---|---|---|---|---|",
    ]
    lines += table(figures["student_steps"], "seconds_per_step", lambda row: step_cells(row, peaks))
    return "\n".join(lines)
