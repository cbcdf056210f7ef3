"""`dfkd distill` and `dfkd evaluate`: the core on local files, no service, with a progress bar."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("distill", help="distil a local teacher file, no service needed")
    parser.add_argument(
        "--teacher",
        type=Path,
        required=True,
        help="teacher weights (.safetensors), or an ONNX graph (.onnx: no --teacher-arch)",
    )
    parser.add_argument(
        "--teacher-arch",
        default=None,
        help="registry name (lenet5), torchvision:<name> or timm:<name>; not for .onnx",
    )
    parser.add_argument(
        "--input-shape",
        default=None,
        help="torchvision / timm teachers: [C, H, W] as JSON (default: the library's)",
    )
    parser.add_argument(
        "--teacher-kwargs", default="{}", help="JSON object of constructor arguments"
    )
    parser.add_argument(
        "--student-arch",
        required=True,
        help="registry name (lenet5_half), torchvision:<name> or timm:<name>",
    )
    parser.add_argument(
        "--student-kwargs",
        default="{}",
        help="JSON object; shape arguments default to the teacher's",
    )
    parser.add_argument(
        "--method", default=None, help="a registered method (`dfkd methods` lists them)"
    )
    parser.add_argument(
        "--metadata",
        type=Path,
        default=None,
        help="the teacher's activation record, for methods that need one",
    )
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=None,
        help="seconds of training; ends at this or --iterations, whichever comes first",
    )
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
        "--few-shot-data", type=Path, default=None, help="labelled npz to fine-tune on afterwards"
    )
    parser.add_argument(
        "--few-shot-per-class", type=int, default=100, help="M real images per class"
    )
    parser.add_argument(
        "--eval-data", type=Path, default=None, help="labelled npz/safetensors to report on"
    )
    parser.add_argument("--mte-images", type=int, default=1000, help="0 skips MTE")
    parser.add_argument("--mte-steps", type=int, default=100)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the training passes (a compile at the start, faster steps after)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="intra-op threads (torch's default if unset)"
    )
    parser.add_argument("--out", type=Path, default=Path("student.safetensors"))
    parser.add_argument(
        "--metrics", type=Path, default=Path("metrics.jsonl"), help="one JSON line per log point"
    )
    parser.add_argument(
        "--report", type=Path, default=None, help="evaluation report JSON (with --eval-data)"
    )
    parser.set_defaults(handler=run)

    evaluate = commands.add_parser(
        "evaluate", help="accuracy, agreement and MTE of a student against its teacher"
    )
    evaluate.add_argument("--teacher", type=Path, required=True)
    evaluate.add_argument("--teacher-arch", default=None, help="not for .onnx teachers")
    evaluate.add_argument("--teacher-kwargs", default="{}")
    evaluate.add_argument("--input-shape", default=None, help="[C, H, W] for library teachers")
    evaluate.add_argument("--student", type=Path, required=True)
    evaluate.add_argument("--student-arch", required=True)
    evaluate.add_argument("--student-kwargs", default="{}")
    evaluate.add_argument("--data", type=Path, required=True, help="labelled npz/safetensors")
    evaluate.add_argument("--mte-images", type=int, default=1000, help="0 skips MTE")
    evaluate.add_argument("--mte-steps", type=int, default=100)
    evaluate.add_argument(
        "--plot", type=Path, default=None, help="write the transition-curve PNG here"
    )
    evaluate.set_defaults(handler=run_evaluate)

    methods = commands.add_parser(
        "methods", help="the distillation methods with their hyperparameters (JSON)"
    )
    methods.set_defaults(handler=run_methods)


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _load_pair(
    args: argparse.Namespace, student_weights: Path | None
) -> tuple[Any, Any, tuple[int, int, int], int]:
    """The teacher (weights loaded, or an ONNX graph converted) and the student (weights loaded
    when given), from the registry, torchvision or timm."""
    from core.models import build, get_spec
    from core.models.library import inherited_kwargs, is_library_name, output_shape
    from core.weights import load_weights, read_state_dict

    if args.teacher.suffix == ".onnx":
        teacher, input_shape, num_classes = _onnx_teacher(args.teacher)
    else:
        if args.teacher_arch is None:
            raise SystemExit("--teacher-arch is needed for safetensors teachers")
        teacher_spec = get_spec(args.teacher_arch)
        teacher_kwargs = teacher_spec.resolve_kwargs(**json.loads(args.teacher_kwargs))
        teacher = load_weights(
            build(args.teacher_arch, **teacher_kwargs), read_state_dict(args.teacher)
        )
        input_shape = teacher_spec.input_shape(**teacher_kwargs)
        if args.input_shape:
            input_shape = tuple(json.loads(args.input_shape))
        num_classes = (
            output_shape(args.teacher_arch, teacher_kwargs, input_shape)[1]
            if is_library_name(args.teacher_arch)
            else teacher_spec.num_classes(**teacher_kwargs)
        )
    shape_kwargs = inherited_kwargs(args.student_arch, input_shape, num_classes)
    student = build(args.student_arch, **{**shape_kwargs, **json.loads(args.student_kwargs)})
    if student_weights is not None:
        load_weights(student, read_state_dict(student_weights))
    return teacher, student, input_shape, num_classes


def _onnx_teacher(path: Path) -> tuple[Any, tuple[int, int, int], int]:
    from core.onnx_teacher import OnnxTeacherError, check_onnx_teacher, load_onnx_teacher

    try:
        facts, difference = check_onnx_teacher(path)
    except OnnxTeacherError as error:
        raise SystemExit(f"{path}: {error}") from None
    print(f"ONNX teacher converted: max difference from onnxruntime {difference:.2e}")
    return load_onnx_teacher(path.read_bytes()), facts.input_shape, facts.num_classes


def _config(spec: Any, args: argparse.Namespace, device: str) -> Any:
    overrides: dict[str, Any] = dict(item.split("=", 1) for item in args.hp)
    run: dict[str, Any] = {"seed": args.seed, "device": device}
    if args.budget_seconds is not None:  # unless --iterations too, the budget alone ends the run
        run |= {"budget_seconds": args.budget_seconds, "iterations": None}
    for name, value in (("iterations", args.iterations), ("batch_size", args.batch_size)):
        if value is not None:
            run[name] = value
    try:
        return spec.build_config({k: _parse_value(v) for k, v in overrides.items()}, **run)
    except ValueError as error:
        raise SystemExit(str(error)) from None


def _progress_hooks(bar: Any, out: Any, method: str) -> Any:
    from tqdm import tqdm

    from core.fewshot import PHASE_NAME
    from core.training import Progress, TrainingHooks

    prefix = f"{PHASE_NAME}_"

    class BarHooks(TrainingHooks):
        def on_log(self, step: int, metrics: dict[str, float], progress: Progress) -> None:
            follow_up = any(name.startswith(prefix) for name in metrics)
            if not follow_up:
                bar.total = progress.total
                bar.update(step - bar.n)
                bar.set_postfix(sps=f"{progress.samples_per_second:.0f}")
            values = {name.removeprefix(prefix): value for name, value in metrics.items()}
            phase = PHASE_NAME if follow_up else method
            out.write(json.dumps({"phase": phase, "step": step, **values}) + "\n")

        def on_warning(self, message: str) -> None:
            tqdm.write(f"warning: {message}")

    return BarHooks()


def _task(args: argparse.Namespace, spec: Any) -> Any:
    from core.batchnorm import batchnorm_layers
    from core.method_registry import ACTIVATION_RECORD, TeacherFacts
    from core.models import get_spec
    from core.training import DistillationTask

    teacher, student, input_shape, num_classes = _load_pair(args, None)
    metadata = None
    if ACTIVATION_RECORD in spec.requirements:
        from core.metadata import load_metadata

        if args.metadata is None:
            raise SystemExit(
                f"--method {spec.name} needs --metadata (made by `dfkd record-metadata`)"
            )
        metadata = load_metadata(args.metadata)
    task_type = _task_type(teacher, input_shape)
    facts = TeacherFacts(
        num_classes,
        input_shape,
        has_activation_record=metadata is not None,
        count_batchnorm=lambda: len(batchnorm_layers(teacher)),
        task_type=task_type,
    )
    unmet = spec.unmet_requirement(facts)
    if unmet is not None:
        raise SystemExit(f"{unmet[0]}: {unmet[1]}")
    return DistillationTask(
        teacher,
        student,
        input_shape,
        num_classes,
        get_spec(args.teacher_arch).taps if args.teacher.suffix != ".onnx" else (),
        get_spec(args.student_arch).taps,
        metadata=metadata,
        task_type=task_type,
    )


def _task_type(teacher: Any, input_shape: tuple[int, int, int]) -> str:
    """classification or segmentation, from the teacher's output on a dummy batch."""
    import torch

    from core.segmentation import task_of_output

    with torch.no_grad():
        logits = teacher.eval()(torch.zeros(2, *input_shape))
    task = task_of_output(tuple(logits.shape))
    if task is None:
        raise SystemExit(
            f"the teacher gives {list(logits.shape)}: [N, classes] or [N, classes, H, W] logits "
            "were expected"
        )
    return task


def _follow_ups(args: argparse.Namespace, device: str) -> tuple[Any, ...]:
    if not args.few_shot_data:
        return ()
    from core.datasets import read_labelled
    from core.fewshot import FewShotConfig, few_shot_phase

    config = FewShotConfig(images_per_class=args.few_shot_per_class, seed=args.seed, device=device)
    return (few_shot_phase(read_labelled(args.few_shot_data).prepared(), config),)


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from core.acceleration import Acceleration
    from core.devices import resolve_device
    from core.loop import distill
    from core.method_registry import UnknownMethodError, default_method, get_method
    from core.weights import state_dict_bytes

    try:
        spec = get_method(args.method or default_method())
    except UnknownMethodError as error:
        raise SystemExit(str(error)) from None
    task = _task(args, spec)
    device = resolve_device(args.device)
    config = _config(spec, args, device)
    effective = config.effective(task.num_classes, task.input_shape)
    print(json.dumps({"method": spec.name, **asdict(effective)}))
    if args.threads:
        torch.set_num_threads(args.threads)
    bar = tqdm(total=effective.iterations, unit="it")
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    with args.metrics.open("w") as metrics_file:
        result = distill(
            task,
            config,
            _progress_hooks(bar, metrics_file, spec.name),
            acceleration=Acceleration(compile=args.compile),
            follow_ups=_follow_ups(args, device),
        )
        bar.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(state_dict_bytes(result.student))
    summary: dict[str, Any] = {
        "student": str(args.out),
        "steps": result.steps,
        "seconds": round(result.elapsed_seconds, 1),
    }
    if args.eval_data:
        summary |= _evaluation(args, result.student, task.teacher)
    print(json.dumps(summary))
    return 0


def _evaluation(args: argparse.Namespace, student: Any, teacher: Any) -> dict[str, Any]:
    from core.datasets import read_labelled
    from core.report import evaluate

    data = read_labelled(args.eval_data).prepared()
    report = evaluate(student, teacher, data, args.mte_images, args.mte_steps)
    summary = {k: v for k, v in report.numbers.items() if k != "mte"}
    if "mte" in report.numbers:
        summary["mte"] = report.numbers["mte"]["mte"]
    if args.report:
        args.report.write_text(json.dumps(report.numbers, indent=1))
    return summary


def run_methods(args: argparse.Namespace) -> int:
    from core.method_registry import list_methods

    del args
    listing = [
        {
            "name": spec.name,
            "summary": spec.summary,
            "paper": spec.paper,
            "requirements": [requirement.code for requirement in spec.requirements],
            "hyperparameters": [info.public() for info in spec.hyperparameters()],
        }
        for spec in list_methods()
    ]
    print(json.dumps(listing, indent=1))
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from core.datasets import read_labelled
    from core.report import evaluate

    teacher, student, _, _ = _load_pair(args, args.student)
    report = evaluate(
        student, teacher, read_labelled(args.data).prepared(), args.mte_images, args.mte_steps
    )
    if args.plot and report.transition_plot:
        args.plot.write_bytes(report.transition_plot)
    numbers = dict(report.numbers)
    if "mte" in numbers:
        numbers["mte"] = {
            k: v for k, v in numbers["mte"].items() if not k.endswith(("_mean", "_stderr"))
        }
    print(json.dumps(numbers))
    return 0
