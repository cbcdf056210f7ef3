"""The GPU part of bench/speed.py: WRN-40-2 -> WRN-16-1 at 32 px, batch 128 (ZSKT's CIFAR pair).

No CIFAR images exist here, so this measures speed only (the teacher is untrained: the arithmetic
is the same). Iterations per second and utilisation of the project's loop with the device's
default levers (channels_last, cuDNN autotuning, fused Adam), each lever off in turn, bf16 autocast
on (off by default: it rounds away the small differences the losses measure, docs/methods.md),
and the reference loop, all at the paper's generator width.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict

import torch

from bench.reference_zskt import reference_distill
from core.acceleration import Acceleration
from core.methods import zskt
from core.models import build, get_spec
from core.training import DistillationTask, Progress, TrainingHooks
from core.utilisation import peak_flops

VARIANTS: dict[str, Acceleration] = {
    "defaults": Acceleration(),
    "bf16 autocast on": Acceleration(bf16_autocast=True),
    "channels_last off": Acceleration(channels_last=False),
    "cudnn.benchmark off": Acceleration(cudnn_benchmark=False),
    "torch.compile on": Acceleration(compile=True),
}


class FlopsHooks(TrainingHooks):
    def __init__(self) -> None:
        self.flops: list[float] = []

    def on_log(self, step: int, metrics: dict[str, float], progress: Progress) -> None:
        if progress.flops_per_second is not None and step > 10:
            self.flops.append(progress.flops_per_second)


def wrn_task(device: str) -> DistillationTask:
    torch.manual_seed(0)
    return DistillationTask(
        build("wrn", depth=40, widen_factor=2).to(device),
        build("wrn", depth=16, widen_factor=1).to(device),
        (3, 32, 32),
        10,
        get_spec("wrn").taps,
        get_spec("wrn").taps,
    )


def gpu_benchmark(device: str, iterations: int = 60) -> dict[str, object]:
    config = zskt.ZSKTConfig(iterations=iterations, batch_size=128, device=device, log_every=10)
    peak = peak_flops(device, size=8192)
    results: dict[str, dict[str, float]] = {}
    for name, acceleration in VARIANTS.items():
        zskt.distill(
            wrn_task(device),
            zskt.ZSKTConfig(**{**asdict(config), "iterations": 5}),
            acceleration=acceleration,
        )
        hooks = FlopsHooks()
        torch.cuda.synchronize()
        started = time.perf_counter()
        zskt.distill(wrn_task(device), config, hooks, acceleration=acceleration)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        results[name] = {
            "iterations_per_second": iterations / seconds,
            "flops_per_second": statistics.median(hooks.flops) if hooks.flops else 0.0,
            "peak_memory_bytes": torch.cuda.max_memory_allocated(),
        }
        torch.cuda.reset_peak_memory_stats()
        print(name, results[name], flush=True)
    task = wrn_task(device)
    reference_config = zskt.ZSKTConfig(**{**asdict(config), "iterations": iterations // 3})
    torch.cuda.synchronize()
    started = time.perf_counter()
    reference_distill(
        task.teacher,
        task.student,
        (task.teacher_taps, task.student_taps),
        task.input_shape,
        10,
        reference_config,
    )
    torch.cuda.synchronize()
    results["reference loop"] = {
        "iterations_per_second": reference_config.iterations / (time.perf_counter() - started),
        "flops_per_second": 0.0,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(),
    }
    return {"device": torch.cuda.get_device_name(device), "peak_flops": peak, "results": results}


def render_gpu(figures: dict[str, object], command: str) -> str:
    peak = float(figures["peak_flops"])
    lines = [
        f"Command: `{command}` on {figures['device']}; float32 matmul peak {peak / 1e12:.1f} TFLOP/s (8192^3, "
        "TF32 off by default). WRN-40-2 -> WRN-16-1, ZSKT, batch 128, generator width 128, untrained teacher.",
        "",
        "| variant | iterations/s | achieved TFLOP/s | utilisation | peak memory |",
        "|---|---|---|---|---|",
    ]
    for name, row in figures["results"].items():  # type: ignore[union-attr]
        lines.append(
            f"| {name} | {row['iterations_per_second']:.2f} | {row['flops_per_second'] / 1e12:.2f} | "
            f"{100 * row['flops_per_second'] / peak:.1f}% | {row['peak_memory_bytes'] / 2**30:.2f} GiB |"
        )
    lines += [
        "",
        "CUDA graphs are not used yet: the attention taps' Python hooks and the optimiser steps "
        "would have to be captured; the static shapes would allow it.",
    ]
    return "\n".join(lines)
