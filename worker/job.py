"""The one job function: claim, load, distil with checkpoints, publish the student, record the end."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import asdict
from typing import Any

import torch
from sqlalchemy import update
from sqlalchemy.orm import Session
from torch import nn

from core.acceleration import Acceleration
from core.datasets import LabelledImages, read_labelled
from core.export import check_onnx, onnx_bytes, torchscript_bytes
from core.fewshot import FewShotConfig, few_shot_phase
from core.hyperparameters import MethodConfig
from core.loop import BudgetTooSmallError, Phase, distill
from core.memory_plan import device_memory_bytes, plan_training
from core.metadata import Metadata, MetadataError, load_metadata
from core.method_registry import ACTIVATION_RECORD, MethodSpec, get_method
from core.models import build, get_spec
from core.onnx_teacher import OnnxTeacherError, load_onnx_teacher
from core.programs import load_program
from core.report import evaluate
from core.segmentation import SEGMENTATION_TASK
from core.synthetic import synthetic_npz
from core.training import CancelledError, DistillationTask, DivergedError
from core.weights import (
    WeightsError,
    check_forward,
    load_weights,
    read_state_dict,
    state_dict_bytes,
)
from service import logs as log_context
from service.blob_keys import (
    checkpoint_key,
    student_export_key,
    student_key,
    synthetic_key,
    transition_curves_key,
)
from service.blobstore import BlobStoreError
from service.db import session_scope
from service.db_retry import in_transaction
from service.deletion import finish_pending
from service.job_state import (
    add_event,
    claim_job,
    drop_metrics_after,
    fail_out_of_attempts,
    finish_job,
)
from service.models import Dataset, Job, JobArtifact, JobStatus, Teacher
from service.retention import drop_checkpoint
from service.settings import Settings
from service.time_limits import effective_time_limit
from service.webhooks import deliver_job_webhook
from worker.context import WorkerContext
from worker.hooks import JobHooks, SoftTimeLimitError
from worker.lease import LeaseKeeper, LeaseLostError

log = logging.getLogger(__name__)


class JobFailure(Exception):
    """Ends the job as failed with a code and a message the user can act on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _load_teacher(context: WorkerContext, teacher: Teacher) -> torch.nn.Module:
    data = context.blobs.get_bytes(teacher.blob_key)
    if teacher.format == "safetensors":
        return load_weights(
            build(teacher.architecture, **teacher.architecture_kwargs), read_state_dict(data)
        )
    if teacher.format == "onnx":  # a graph, converted to torch operators: no uploaded code runs
        try:
            return load_onnx_teacher(data)
        except OnnxTeacherError as error:
            raise JobFailure(
                "teacher_invalid", f"the ONNX teacher did not convert: {error}"
            ) from None
    if not context.settings.allow_program_teachers:
        raise JobFailure(
            "program_formats_disabled", f"this worker does not run {teacher.format} teachers"
        )
    try:
        model = load_program(data, teacher.format)
    except Exception as error:  # the uploader's program can fail in any way
        raise JobFailure(
            "teacher_invalid", f"the {teacher.format} teacher did not load: {error}"
        ) from None
    check_forward(model, tuple(teacher.input_shape), teacher.num_classes)
    try:
        with torch.no_grad():
            model(torch.zeros(3, *teacher.input_shape))
    except Exception as error:
        raise JobFailure(
            "teacher_invalid",
            f"the {teacher.format} teacher only takes one batch size ({error}); export it with a dynamic "
            "batch dimension, e.g. torch.export.export(model, (x,), dynamic_shapes={'x': {0: Dim('batch')}})",
        ) from None
    return model


def soft_time_limit(context: WorkerContext, job: Job) -> float:
    """Past this many seconds of running, the job stops at its next checkpoint."""
    return effective_time_limit(job.time_limit_seconds, context.settings)


def _load_checkpoint(context: WorkerContext, job_id: str, device: str) -> dict[str, Any] | None:
    key = checkpoint_key(job_id)
    if not context.blobs.exists(key):
        return None
    # Our own checkpoint, still loaded without unpickling code: tensors and plain values only.
    return torch.load(
        io.BytesIO(context.blobs.get_bytes(key)), map_location=device, weights_only=True
    )


def _method_config(
    context: WorkerContext, job: Job, spec: MethodSpec, teacher: Teacher, device: str
) -> MethodConfig:
    """The method's config on this worker's device; values the device decides (left unset by the
    API) are filled in here and written back, so the job shows what actually ran."""
    config = spec.build_config(
        job.hyperparameters,
        iterations=job.iterations,
        budget_seconds=job.budget_seconds,
        batch_size=job.batch_size,
        seed=job.seed,
        device=device,
    )
    shown = {
        k: v
        for k, v in asdict(
            config.effective(teacher.num_classes, tuple(teacher.input_shape))
        ).items()
        if k in job.hyperparameters
    }
    shown = json.loads(json.dumps(shown))  # tuples as the JSON column gives them back: lists
    if shown != job.hyperparameters:
        with session_scope(context.sessions) as session:
            session.execute(update(Job).where(Job.id == job.id).values(hyperparameters=shown))
            add_event(session, job.id, "info", f"hyperparameters chosen for {device}: {shown}")
    return config


def _task(context: WorkerContext, job: Job, spec: MethodSpec, teacher: Teacher) -> DistillationTask:
    named = teacher.format == "safetensors"  # graphs and programs name no modules to tap
    return DistillationTask(
        teacher=_load_teacher(context, teacher),
        student=build(job.student_architecture, **job.student_kwargs),
        input_shape=tuple(teacher.input_shape),
        num_classes=teacher.num_classes,
        teacher_taps=get_spec(teacher.architecture).taps if named else (),
        student_taps=get_spec(job.student_architecture).taps,
        metadata=_load_metadata(context, spec, teacher)
        if ACTIVATION_RECORD in spec.requirements
        else None,
        task_type=teacher.task_type,
    )


def _resume_point(context: WorkerContext, job: Job, device: str) -> dict[str, Any] | None:
    checkpoint = _load_checkpoint(context, job.id, device)
    if checkpoint is not None:
        step = int(checkpoint["step"])

        def resume(session: Session) -> None:
            drop_metrics_after(session, job.id, step)
            add_event(session, job.id, "info", f"resuming from the checkpoint at step {step}")

        in_transaction(context.sessions, resume)
    return checkpoint


def _distil(context: WorkerContext, job: Job, teacher: Teacher, lease: LeaseKeeper) -> None:
    device = context.device
    spec = get_method(job.method)
    task = _task(context, job, spec, teacher)
    follow_ups: tuple[Phase, ...] = ()
    if job.few_shot_dataset_id:  # ZSKT's few-shot variant, after any method
        few_shot = FewShotConfig(
            images_per_class=job.few_shot_per_class, seed=job.seed, device=device
        )
        data = _load_dataset(context, job.few_shot_dataset_id, teacher)
        follow_ups = (few_shot_phase(data, few_shot),)
    config = _method_config(context, job, spec, teacher, device)
    _refuse_unfittable(context, task, config.batch_size)
    checkpoint = _resume_point(context, job, device)
    hooks = JobHooks(
        context,
        job.id,
        checkpoint_every=job.checkpoint_every or context.settings.checkpoint_every,
        sample_every=job.sample_every,
        input_mean=teacher.input_mean,
        input_std=teacher.input_std,
        lease=lease,
        soft_time_limit_seconds=soft_time_limit(context, job),
    )
    result = distill(
        task,
        config,
        hooks,
        resume_from=checkpoint,
        acceleration=Acceleration(compile=context.settings.compile_models),
        follow_ups=follow_ups,
    )
    hooks.flush()
    student = result.student
    context.blobs.put_bytes(student_key(job.id), state_dict_bytes(student))
    _export_student(context, job, student, tuple(teacher.input_shape), result.steps)
    if result.synthetic is not None:
        _publish_synthetic(context, job, result.synthetic, result.steps)

    # --- optional evaluation on the user's labelled set: last iterate, nothing selected on it
    if job.evaluation_dataset_id:
        _write_report(context, job, teacher, student, task.teacher, result.steps)


def _refuse_unfittable(context: WorkerContext, task: DistillationTask, batch_size: int) -> None:
    """Fail at once, naming the batch that fits, rather than by the OOM killer halfway through."""
    limit = context.settings.worker_memory_bytes or device_memory_bytes(context.device)
    plan = plan_training(task.teacher, task.student, task.input_shape)
    if plan.peak_bytes(batch_size) <= limit:
        return
    largest = plan.largest_batch(limit)
    advice = (
        f"the largest batch that fits is {largest}"
        if largest >= 2
        else "no batch fits: choose a smaller student or a worker with more memory"
    )
    raise JobFailure(
        "out_of_memory",
        f"a batch of {batch_size} needs about {plan.peak_bytes(batch_size) / 2**30:.2f} GiB "
        f"(teacher and student activations, kept for backward), more than the "
        f"{limit / 2**30:.2f} GiB this worker has for a job (DFKD_WORKER_MEMORY_BYTES); {advice}",
    )


def _export_student(
    context: WorkerContext,
    job: Job,
    student: nn.Module,
    input_shape: tuple[int, int, int],
    step: int,
) -> None:
    """ONNX (checked against torch in onnxruntime) and TorchScript beside the safetensors weights.
    A model that will not export keeps its safetensors file; the job says why in its events."""
    exports = {
        "student_onnx": (
            student_export_key(job.id, "onnx"),
            lambda: onnx_bytes(student, input_shape),
        ),
        "student_torchscript": (
            student_export_key(job.id, "torchscript"),
            lambda: torchscript_bytes(student, input_shape),
        ),
    }
    for kind, (key, make) in exports.items():
        try:
            data = make()
            if kind == "student_onnx":
                difference = check_onnx(student, data, input_shape)
                message = f"ONNX student checked in onnxruntime: same predictions, max logit difference {difference:.2e}"
            else:
                message = "TorchScript student written"
        except Exception as error:
            with session_scope(context.sessions) as session:
                add_event(session, job.id, "warning", f"{kind} export failed: {error}")
            continue
        context.blobs.put_bytes(key, data)
        with session_scope(context.sessions) as session:
            session.add(
                JobArtifact(
                    job_id=job.id,
                    kind=kind,
                    step=step,
                    blob_key=key,
                    content_type="application/octet-stream",
                )
            )
            add_event(session, job.id, "info", message)


def _publish_synthetic(
    context: WorkerContext, job: Job, synthetic: tuple[torch.Tensor, torch.Tensor], step: int
) -> None:
    """The pool the method synthesised, for distilling more students without synthesis."""
    data = synthetic_npz(*synthetic, context.settings.max_synthetic_artifact_bytes)
    if data is None:
        return
    key = synthetic_key(job.id)
    context.blobs.put_bytes(key, data)
    with session_scope(context.sessions) as session:
        session.add(
            JobArtifact(
                job_id=job.id,
                kind="synthetic",
                step=step,
                blob_key=key,
                content_type="application/octet-stream",
            )
        )
        add_event(session, job.id, "info", f"synthetic set published ({len(data)} bytes)")


def _load_metadata(context: WorkerContext, spec: MethodSpec, teacher: Teacher) -> Metadata:
    if teacher.metadata_key is None:  # removed after the job was accepted
        raise JobFailure(
            ACTIVATION_RECORD.code, f"method {spec.name} needs {ACTIVATION_RECORD.summary}"
        )
    try:
        return load_metadata(context.blobs.get_bytes(teacher.metadata_key))
    except MetadataError as error:
        raise JobFailure("invalid_metadata", str(error)) from None


def _load_dataset(context: WorkerContext, dataset_id: str, teacher: Teacher) -> LabelledImages:
    with session_scope(context.sessions) as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            raise JobFailure("dataset_missing", f"dataset {dataset_id} no longer exists")
        key = dataset.blob_key
    raw = read_labelled(context.blobs.get_bytes(key))
    return raw.prepared(teacher.input_mean, teacher.input_std)


def _write_report(
    context: WorkerContext,
    job: Job,
    teacher: Teacher,
    student: nn.Module,
    teacher_model: nn.Module,
    step: int,
) -> None:
    measures = (
        "mIoU, per-class IoU, pixel agreement"
        if teacher.task_type == SEGMENTATION_TASK
        else "accuracy, agreement, MTE"
    )
    with session_scope(context.sessions) as session:
        add_event(session, job.id, "info", f"evaluating on the labelled set ({measures})")
    data = _load_dataset(context, job.evaluation_dataset_id, teacher)
    options = job.evaluation_options or {}
    # The export moved the student to the CPU while the teacher stayed on the job's device, and
    # MTE walks one input through both networks: put them on the job's device together.
    device = context.device
    report = evaluate(
        student.to(device),
        teacher_model.to(device),
        data,
        options.get("mte_images", 1000),
        options.get("mte_steps", 100),
    )
    with session_scope(context.sessions) as session:
        if report.transition_plot is not None:
            key = transition_curves_key(job.id)
            context.blobs.put_bytes(key, report.transition_plot)
            session.add(
                JobArtifact(
                    job_id=job.id,
                    kind="transition_curves",
                    step=step,
                    blob_key=key,
                    content_type="image/png",
                )
            )
        session.execute(update(Job).where(Job.id == job.id).values(report=report.numbers))


def run_job(job_id: str, context: WorkerContext) -> None:
    """Run one job to a final state. Safe to call twice for the same job: only one claim wins."""
    token = log_context.job_id.set(job_id)
    try:
        _run_claimed(job_id, context)
    finally:
        log_context.job_id.reset(token)


def _run_claimed(job_id: str, context: WorkerContext) -> None:
    settings = context.settings

    def claim(session: Session) -> tuple[Job, Teacher] | None:
        if not claim_job(session, job_id, settings.job_lease_seconds, settings.max_attempts):
            return None
        job = session.get(Job, job_id)
        teacher = session.get(Teacher, job.teacher_id)
        add_event(session, job_id, "state", f"running (attempt {job.attempts}) on {context.device}")
        return job, teacher

    claimed = in_transaction(context.sessions, claim)
    if claimed is None:
        if in_transaction(
            context.sessions,
            lambda session: fail_out_of_attempts(session, job_id, settings.max_attempts),
        ):
            log.warning("job %s: its last attempt lapsed; failed with too_many_attempts", job_id)
            deliver_job_webhook(context.sessions, settings, job_id)
            return
        log.info("job %s: nothing to claim (already taken, finished or cancelled)", job_id)
        return
    job, teacher = claimed
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)

    outcome: tuple[JobStatus, dict[str, Any], str]
    with LeaseKeeper(context, job_id, job.attempts) as lease:
        try:
            _distil(context, job, teacher, lease)
            outcome = (JobStatus.succeeded, {"student_key": student_key(job_id)}, "succeeded")
        except LeaseLostError:
            log.warning("job %s: attempt %d lost its lease; leaving the job", job_id, job.attempts)
            return
        except CancelledError as stop:
            outcome = (JobStatus.cancelled, {}, f"cancelled at step {stop.step}")
        except SoftTimeLimitError as stop:
            outcome = _failure(
                "time_limit",
                f"{stop}; {_checkpoint_fate(settings, stop.step)}. The limit is the job's "
                "time_limit_seconds, capped by the service's DFKD_JOB_SOFT_TIME_LIMIT_SECONDS "
                "(per attempt): submit fewer iterations or a longer time_limit_seconds, or ask "
                "the operator for a longer service limit",
            )
        except DivergedError as error:
            outcome = _failure("diverged", str(error))
        except BudgetTooSmallError as error:
            outcome = _failure("budget_too_small", str(error))
        except MetadataError as error:
            outcome = _failure("invalid_metadata", str(error))
        except WeightsError as error:
            outcome = _failure("teacher_invalid", str(error))
        except JobFailure as error:
            outcome = _failure(error.code, error.message)
        except BlobStoreError as error:
            outcome = _failure(
                "storage_unavailable", f"{error}; the job can be resubmitted once storage is back"
            )
        except Exception as error:
            log.exception("job %s crashed", job_id)
            outcome = _failure("internal_error", f"{type(error).__name__}: {error}")

    status, values, message = outcome

    def finish(session: Session) -> bool:
        ended = finish_job(session, job_id, status, attempt=job.attempts, **values)
        if ended:
            add_event(session, job_id, "error" if status == JobStatus.failed else "state", message)
        return ended

    if in_transaction(context.sessions, finish):
        _after_end(context, job_id)
    log.info("job %s: %s", job_id, message)


def _checkpoint_fate(settings: Settings, step: int) -> str:
    if settings.keep_checkpoints:
        return f"its checkpoint at step {step} is kept"
    return f"it stopped after its checkpoint at step {step} (deleted as the job ends; DFKD_KEEP_CHECKPOINTS keeps them)"


def _after_end(context: WorkerContext, job_id: str) -> None:
    """The job ended on this worker: its checkpoint goes (unless kept), its webhook is sent, and
    a DELETE that waited for it to stop is finished now."""
    drop_checkpoint(context.blobs, context.settings, job_id)
    deliver_job_webhook(context.sessions, context.settings, job_id)
    try:
        with context.sessions() as session:
            finish_pending(session, context.blobs, job_id)
    except Exception:  # the reaper's pass finishes it
        log.exception("job %s: its pending deletion is left to the reaper", job_id)


def _failure(code: str, message: str) -> tuple[JobStatus, dict[str, Any], str]:
    return JobStatus.failed, {"error_code": code, "error_message": message}, f"failed: {message}"
