"""The allocator lever (core/allocator.py) measured alone: the project's own loops with glibc's
default thresholds and with freed buffers kept, each run in a fresh process, alternating.

    .venv/bin/python bench/allocator.py                 # ZSKT and DFAD, 3 rounds of 150 iterations, ~8 min
    .venv/bin/python bench/allocator.py --iterations 60 --rounds 1 --no-write   # a check

A process-wide setting cannot be switched back inside one process, so each run is a child process
(multiprocessing spawn) that loads the same teacher and runs `core.loop.distill` for the method from
the same seed; reported per run: pseudo-samples/s on the loop's clock, kernel (system) CPU seconds,
minor page faults and peak resident memory of the child.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service_harness import REPO, command_line, machine, machine_line, save_results

sys.path.insert(0, str(REPO))
from report_section import replace_section
from service_overhead import lenet_task, train_teacher  # the overhead bench's teacher and task

BATCH, SEED = 128, 0


def run_child(method: str, keep: bool, teacher_file: str, iterations: int, out: object) -> None:
    from core.acceleration import Acceleration
    from core.loop import distill
    from core.methods import dfad, zskt
    from core.training import TrainingHooks

    task = lenet_task(Path(teacher_file))
    config_type = zskt.ZSKTConfig if method == "zskt" else dfad.DFADConfig
    config = config_type(iterations=iterations, batch_size=BATCH, seed=SEED, device="cpu")
    before_cpu = os.times()
    before_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    result = distill(
        task, config, TrainingHooks(), acceleration=Acceleration(keep_freed_memory=keep)
    )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # as bench/speed.py counts them: ZSKT one generator batch per iteration, DFAD one per step
    per_iteration = config.student_steps + config.generator_steps if method == "dfad" else 1
    samples = result.steps * BATCH * per_iteration
    out.put(  # type: ignore[attr-defined]
        {
            "method": method,
            "keep_freed_memory": keep,
            "samples_per_second": samples / result.elapsed_seconds,
            "system_seconds": os.times().system - before_cpu.system,
            "user_seconds": os.times().user - before_cpu.user,
            "minor_faults": usage.ru_minflt - before_faults,
            "peak_rss_mib": usage.ru_maxrss / 1024,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=["zskt", "dfad"])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    info = machine()
    spawn = multiprocessing.get_context("spawn")
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="dfkd-bench-") as tmp:
        teacher = str(train_teacher(Path(tmp)))
        for _ in range(args.rounds):
            for method in args.methods:
                for keep in (False, True):
                    out = spawn.Queue()
                    child = spawn.Process(
                        target=run_child, args=(method, keep, teacher, args.iterations, out)
                    )
                    child.start()
                    run = out.get()
                    child.join()
                    print(run, flush=True)
                    runs.append(run)
    rows, summary = [], []
    for run in runs:
        rows.append(
            f"| {run['method']} | {'kept' if run['keep_freed_memory'] else 'glibc default'} | "
            f"{run['samples_per_second']:.0f} | {run['user_seconds']:.1f} | "
            f"{run['system_seconds']:.1f} | {run['minor_faults']:,} | {run['peak_rss_mib']:.0f} |"
        )
    for method in args.methods:
        off = [
            r["samples_per_second"]
            for r in runs
            if r["method"] == method and not r["keep_freed_memory"]
        ]
        on = [
            r["samples_per_second"]
            for r in runs
            if r["method"] == method and r["keep_freed_memory"]
        ]
        summary.append(
            f"- {method}: median {statistics.median(off):.0f} -> {statistics.median(on):.0f} "
            f"pseudo-samples/s, **{statistics.median(on) / statistics.median(off):.2f}x**"
        )
    body = "\n".join(
        [
            f"`{command_line()}`",
            "",
            machine_line(info),
            "",
            f"LeNet-5 -> LeNet-5-half, {args.iterations} iterations, batch {BATCH}, the methods' "
            "CPU defaults, each run a fresh process (the setting is process-wide), glibc default "
            "and kept alternating. Samples/s on the loop's own clock; CPU seconds, faults and peak "
            "RSS of the whole child (teacher loading included).",
            "",
            "| method | allocator | pseudo-samples/s | user CPU s | system CPU s | minor faults | peak RSS MiB |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            *summary,
        ]
    )
    print(body)
    if not args.no_write:
        save_results("allocator", {"machine": info, "runs": runs})
        replace_section(REPO / "docs" / "benchmarks.md", "The allocator: freed buffers kept", body)


if __name__ == "__main__":
    main()
