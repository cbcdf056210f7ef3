"""`dfkd distill`: the core on a local teacher file, no service, with a progress bar."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("distill", help="distil a local teacher file, no service needed")
    parser.add_argument(
        "--teacher", type=Path, required=True, help="teacher weights (.safetensors)"
    )
    parser.add_argument("--teacher-arch", required=True, help="registry name, e.g. lenet5")
    parser.add_argument(
        "--teacher-kwargs", default="{}", help="JSON object of constructor arguments"
    )
    parser.add_argument("--student-arch", required=True, help="registry name, e.g. lenet5_half")
    parser.add_argument(
        "--student-kwargs",
        default="{}",
        help="JSON object; shape arguments default to the teacher's",
    )
    parser.add_argument("--method", default="zskt", choices=["zskt"])
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--hp",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a method hyperparameter (repeatable)",
    )
    parser.add_argument(
        "--eval-data", type=Path, default=None, help="npz with images [N,C,H,W] and labels [N]"
    )
    parser.add_argument("--out", type=Path, default=Path("student.safetensors"))
    parser.add_argument(
        "--metrics", type=Path, default=Path("metrics.jsonl"), help="one JSON line per log point"
    )
    parser.set_defaults(handler=run)


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from core.evaluation import accuracy, agreement_on
    from core.methods import METHODS
    from core.models import build, get_spec
    from core.training import DistillationTask, Progress, TrainingHooks
    from core.weights import load_weights, read_state_dict, state_dict_bytes

    teacher_spec = get_spec(args.teacher_arch)
    teacher_kwargs = teacher_spec.resolve_kwargs(**json.loads(args.teacher_kwargs))
    teacher = load_weights(
        build(args.teacher_arch, **teacher_kwargs), read_state_dict(args.teacher)
    )
    input_shape = teacher_spec.input_shape(**teacher_kwargs)
    num_classes = teacher_spec.num_classes(**teacher_kwargs)
    shape_kwargs = {
        "num_classes": num_classes,
        "in_channels": input_shape[0],
        "image_size": input_shape[1],
    }
    student = build(args.student_arch, **{**shape_kwargs, **json.loads(args.student_kwargs)})

    device = (
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    method = METHODS[args.method]
    overrides: dict[str, Any] = dict(item.split("=", 1) for item in args.hp)
    known = {f.name for f in fields(method.Config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SystemExit(
            f"unknown hyperparameter(s) {unknown} for {args.method}; known: {sorted(known)}"
        )
    values = {k: _parse_value(v) for k, v in overrides.items()}
    for name, value in (("iterations", args.iterations), ("batch_size", args.batch_size)):
        if value is not None:
            values[name] = value
    config = method.Config(**values, seed=args.seed, device=device)
    print(json.dumps({"method": args.method, **asdict(config.effective(num_classes))}))

    bar = tqdm(total=config.iterations, unit="it")
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    with args.metrics.open("w") as metrics_file:

        class BarHooks(TrainingHooks):
            def on_log(self, step: int, metrics: dict[str, float], progress: Progress) -> None:
                bar.update(step - bar.n)
                bar.set_postfix(
                    kl=f"{metrics['kl']:.3f}",
                    agree=f"{metrics['pseudo_agreement']:.2f}",
                    sps=f"{progress.samples_per_second:.0f}",
                )
                metrics_file.write(json.dumps({"step": step, **metrics}) + "\n")

            def on_warning(self, message: str) -> None:
                tqdm.write(f"warning: {message}")

        task = DistillationTask(
            teacher,
            student,
            input_shape,
            num_classes,
            teacher_spec.taps,
            get_spec(args.student_arch).taps,
        )
        result = method.distill(task, config, BarHooks())
    bar.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(state_dict_bytes(result.student))
    summary: dict[str, Any] = {
        "student": str(args.out),
        "steps": result.steps,
        "seconds": round(result.elapsed_seconds, 1),
    }
    if args.eval_data:
        from core.datasets import load_npz

        data = load_npz(args.eval_data)
        student_cpu, teacher_cpu = result.student.cpu(), teacher.cpu()
        summary |= {
            "student_accuracy": accuracy(student_cpu, data.images, data.labels),
            "teacher_accuracy": accuracy(teacher_cpu, data.images, data.labels),
            "agreement": agreement_on(student_cpu, teacher_cpu, data.images),
        }
    print(json.dumps(summary))
    return 0
