"""What POST /v1/jobs checks before it queues a job: the teacher, the student, the datasets, the
method's requirements (from the registry) and the deployment's limits."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sqlalchemy.orm import Session

from api.deps import owned
from api.errors import ApiError
from api.job_specs import JobSpec
from api.model_limits import refuse_oversized_model
from core.batchnorm import planned_batchnorm_layers
from core.datasets import TARGET_ARRAY_OF_TASK
from core.devices import resolve_device
from core.hyperparameters import JOB_FIELDS, MethodConfig
from core.method_registry import MethodSpec, TeacherFacts, get_method
from core.models import ArchitectureArgumentError, UnknownArchitectureError, get_spec
from core.models.library import inherited_kwargs, is_library_name, output_shape
from core.segmentation import CLASSIFICATION_TASK, expected_logits_shape
from service.deletion import pending_deletion
from service.models import Dataset, Teacher
from service.secret_box import secret_digest
from service.settings import Settings
from service.time_limits import effective_time_limit
from service.webhook_targets import WebhookTargetRefused, check_at_submission


def _validate_student(body: Any, teacher: Teacher, max_parameters: int) -> dict[str, Any]:
    try:
        spec = get_spec(body.student.architecture)
    except UnknownArchitectureError as error:
        raise ApiError(422, "invalid_architecture", f"student.architecture: {error}") from None
    if spec.task != teacher.task_type:
        raise ApiError(
            422,
            "task_mismatch",
            f"student.architecture: {spec.name} is a {spec.task} network but the teacher is a "
            f"{teacher.task_type} network; choose a {teacher.task_type} student "
            "(GET /v1/architectures gives each one's task)",
        )
    if is_library_name(spec.name):
        return _validate_library_student(spec.name, body.student.kwargs, teacher, max_parameters)
    # Shape arguments the student omits come from the teacher.
    inherited = {
        "num_classes": teacher.num_classes,
        "in_channels": teacher.input_shape[0],
        "image_size": teacher.input_shape[1],
    }
    try:
        kwargs = spec.resolve_kwargs(**{**inherited, **body.student.kwargs})
        refuse_oversized_model(spec.name, kwargs, max_parameters, "DFKD_MAX_STUDENT_PARAMETERS")
    except ArchitectureArgumentError as error:
        raise ApiError(422, "invalid_architecture", f"student.kwargs: {error}") from None
    if list(spec.input_shape(**kwargs)) != list(teacher.input_shape):
        raise ApiError(
            422,
            "shape_mismatch",
            f"the student takes inputs of shape {list(spec.input_shape(**kwargs))} but the teacher takes "
            f"{list(teacher.input_shape)}; drop in_channels/image_size from student.kwargs to inherit the teacher's",
        )
    if spec.num_classes(**kwargs) != teacher.num_classes:
        raise ApiError(
            422,
            "shape_mismatch",
            f"the student has {spec.num_classes(**kwargs)} classes but the teacher has {teacher.num_classes}",
        )
    return kwargs


def _validate_library_student(
    name: str, given: dict[str, Any], teacher: Teacher, max_parameters: int
) -> dict[str, Any]:
    """A torchvision / timm student: the teacher's classes (and, for timm, channels) unless
    given, and one meta-device forward pass at the teacher's input giving its logits."""
    shape = tuple(teacher.input_shape)
    kwargs = {**inherited_kwargs(name, shape, teacher.num_classes), **given}
    try:
        refuse_oversized_model(name, kwargs, max_parameters, "DFKD_MAX_STUDENT_PARAMETERS")
        logits = output_shape(name, kwargs, shape)
    except ArchitectureArgumentError as error:
        raise ApiError(422, "invalid_architecture", f"student.kwargs: {error}") from None
    expected = list(expected_logits_shape(1, teacher.num_classes, shape, teacher.task_type))
    if logits != expected:
        raise ApiError(
            422,
            "shape_mismatch",
            f"the student gives {logits} for one input of shape {list(teacher.input_shape)}; "
            f"the teacher gives {expected}",
        )
    return kwargs


def _refuse_oversized_data(config: MethodConfig, teacher: Teacher, limit: int) -> None:
    """Methods that keep synthesised inputs in memory say how many bytes at most (a config's
    `data_bytes`); above the deployment's limit the job is refused before it runs."""
    field = config.DATA_SIZE_FIELD
    if field is None:
        return
    shape = tuple(teacher.input_shape)
    needed = config.data_bytes(teacher.num_classes, shape)
    if needed > limit:
        size = getattr(config, field)
        raise ApiError(
            422,
            "validation_error",
            f"hyperparameters.{field}: {size} synthesised inputs of shape {list(shape)} "
            f"take {needed} bytes, more than the {limit} allowed (DFKD_MAX_LOPES_SAMPLE_BYTES); "
            f"at most {limit * size // needed} fit",
        )


def planned_device(settings: Settings) -> str | None:
    """The device jobs will run on, when this process can know it."""
    if settings.device != "auto" or settings.uses_embedded_runner:  # the runner is this process
        return resolve_device(settings.device)
    return None


def _check_dataset(session: Session, field: str, dataset_id: str | None, teacher: Teacher) -> None:
    if dataset_id is None:
        return
    dataset = owned(session, Dataset, dataset_id, teacher.tenant_id)
    if dataset is None:
        raise ApiError(
            422,
            "dataset_not_found",
            f"{field}: no dataset {dataset_id!r}; upload one with POST /v1/datasets",
        )
    if dataset.task_type != teacher.task_type:
        raise ApiError(
            422,
            "dataset_mismatch",
            f"{field}: the dataset holds {TARGET_ARRAY_OF_TASK[dataset.task_type]} "
            f"({dataset.task_type}) but the teacher is a {teacher.task_type} network; upload a "
            f"set with {TARGET_ARRAY_OF_TASK[teacher.task_type]}",
        )
    if list(dataset.image_shape) != list(teacher.input_shape):
        raise ApiError(
            422,
            "dataset_mismatch",
            f"{field}: the dataset's images are {dataset.image_shape} but the teacher takes {teacher.input_shape}",
        )
    largest = max((int(label) for label in dataset.class_counts), default=0)
    if largest >= teacher.num_classes:
        raise ApiError(
            422,
            "dataset_mismatch",
            f"{field}: the dataset has label {largest} but the teacher has {teacher.num_classes} classes",
        )


def teacher_facts(teacher: Teacher) -> TeacherFacts:
    def count_batchnorm() -> int | None:
        if teacher.format != "safetensors":  # a program's layers are known to workers only
            return None
        return planned_batchnorm_layers(teacher.architecture, **teacher.architecture_kwargs)

    return TeacherFacts(
        num_classes=teacher.num_classes,
        input_shape=tuple(teacher.input_shape),
        has_activation_record=teacher.metadata_key is not None,
        count_batchnorm=count_batchnorm,
        task_type=teacher.task_type,
    )


def _check_budget(budget: float | None, time_limit: float | None, settings: Settings) -> None:
    if budget is None:
        return
    limit = effective_time_limit(time_limit, settings)
    if budget > limit:
        raise ApiError(
            422,
            "validation_error",
            f"budget_seconds: {budget:g} is above the {limit:g}s an attempt may run here "
            "(the job's time_limit_seconds, capped by DFKD_JOB_SOFT_TIME_LIMIT_SECONDS); "
            "give a smaller budget or ask the operator for a longer limit",
        )


def _check_webhook(body: JobSpec, settings: Settings) -> None:
    """Deliveries are checked again each time; this refuses early what is refused now."""
    if body.webhook is None:
        return
    try:
        check_at_submission(str(body.webhook.url), settings.webhook_allowed_networks)
    except WebhookTargetRefused as error:
        raise ApiError(422, "webhook_url_refused", f"webhook.url: {error}") from None


def fingerprint_parts(body: JobSpec, settings: Settings) -> dict[str, Any]:
    """What the Idempotency-Key check compares: the body as sent, its webhook secret replaced by
    a keyed digest (the stored fingerprint is a plain SHA-256)."""
    parts = body.model_dump(mode="json", exclude_unset=True)
    if body.webhook is not None:
        parts["webhook"]["secret"] = secret_digest(settings, body.webhook.secret)
    return parts


def checked_job(
    body: JobSpec, session: Session, tenant: str, settings: Settings
) -> tuple[Teacher, dict[str, Any], dict[str, Any]]:
    """The job's teacher, its student's kwargs and the method's effective hyperparameters, once
    everything the job names fits the teacher, the method and the deployment's limits."""
    teacher = owned(session, Teacher, body.teacher_id, tenant)
    if teacher is None:
        raise ApiError(
            422,
            "teacher_not_found",
            f"teacher_id: no teacher {body.teacher_id!r}; upload one with POST /v1/teachers",
        )
    if pending_deletion(session, teacher.id) is not None:
        raise ApiError(
            422,
            "teacher_being_deleted",
            f"teacher_id: teacher {teacher.id!r} is being deleted (its running jobs are "
            "stopping); upload it again to start new jobs",
        )
    student_kwargs = _validate_student(body, teacher, settings.max_student_parameters)
    for field in ("evaluation_dataset_id", "few_shot_dataset_id"):
        _check_dataset(session, field, getattr(body, field), teacher)
    if body.few_shot_dataset_id is not None and teacher.task_type != CLASSIFICATION_TASK:
        raise ApiError(
            422,
            "unsupported_task_type",
            "few_shot_dataset_id: few-shot fine-tuning (ZSKT's variant) trains a classifier on "
            f"labelled images; this teacher is a {teacher.task_type} network",
        )
    spec = get_method(body.method)  # the body's union admits registered methods only
    device = planned_device(settings)
    config = _method_config(spec, body, device)
    _refuse_oversized_data(config, teacher, settings.max_lopes_sample_bytes)
    unmet = spec.unmet_requirement(teacher_facts(teacher))
    if unmet is not None:
        raise ApiError(422, *unmet)
    _check_budget(body.budget_seconds, body.time_limit_seconds, settings)
    _check_webhook(body, settings)
    return teacher, student_kwargs, _shown(spec, config, teacher, body, device)


def _method_config(spec: MethodSpec, body: JobSpec, device: str | None) -> MethodConfig:
    return spec.build_config(
        body.hyperparameters.model_dump(),
        iterations=body.iterations,
        batch_size=body.batch_size,
        budget_seconds=body.budget_seconds,
        seed=body.seed,
        device=device or "cpu",
    )


def _shown(
    spec: MethodSpec, config: MethodConfig, teacher: Teacher, body: JobSpec, device: str | None
) -> dict[str, Any]:
    """The method's config with every derived default filled in, as the job shows it."""
    try:
        effective = asdict(config.effective(teacher.num_classes, tuple(teacher.input_shape)))
    except ValueError as error:
        raise ApiError(422, "validation_error", f"hyperparameters: {error}") from None
    if device is None:  # the worker's device decides these when it starts
        requested = body.hyperparameters.model_dump()
        effective |= {
            info.name: None
            for info in spec.hyperparameters()
            if info.device_defaults is not None and requested.get(info.name) is None
        }
    for key in JOB_FIELDS:
        effective.pop(key)
    return effective
