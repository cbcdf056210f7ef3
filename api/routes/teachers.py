from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Annotated, Any

import torch
from fastapi import APIRouter, File, Form, Request, Response, UploadFile, status
from sqlalchemy import select
from torch import nn

from api.deps import BlobsDep, IdempotencyKey, SessionDep, SettingsDep, TenantDep, owned, replay
from api.errors import ApiError
from api.model_limits import refuse_oversized_model
from api.pagination import CreatedRangeDep, PageAfter, PageLimit, fetch_page
from api.schemas import TeacherPublic, TeachersPublic, as_utc
from api.uploads import (
    PICKLE_HINT,
    refuse_declared_oversize,
    refuse_unsafe_formats,
    spool_upload,
    spooled_blob,
    store_upload,
)
from core.metadata import MetadataError, check_teacher, load_metadata, weights_file_fingerprint
from core.models import (
    ArchitectureArgumentError,
    UnknownArchitectureError,
    build,
    forward_peak_bytes,
    get_spec,
)
from core.programs import PROGRAM_FORMATS, ProgramArchiveError, check_program_archive
from core.weights import (
    FORWARD_CHECK_BATCH,
    WeightsError,
    check_forward,
    check_weights_file,
    load_weights,
    parameter_count,
    read_state_dict,
)
from service.blob_keys import teacher_metadata_key, teacher_weights_key
from service.idempotency import commit_once, request_fingerprint
from service.models import Teacher, new_id

router = APIRouter(prefix="/v1/teachers", tags=["teachers"])


def to_public(teacher: Teacher) -> TeacherPublic:
    return TeacherPublic(
        id=teacher.id,
        name=teacher.name,
        format=teacher.format,
        architecture=teacher.architecture,
        architecture_kwargs=teacher.architecture_kwargs,
        input_shape=teacher.input_shape,
        num_classes=teacher.num_classes,
        input_mean=teacher.input_mean,
        input_std=teacher.input_std,
        sha256=teacher.sha256,
        size_bytes=teacher.size_bytes,
        parameter_count=teacher.parameter_count if teacher.format == "safetensors" else None,
        metadata=teacher.metadata_info,
        created_at=as_utc(teacher.created_at),
    )


def _json_object(raw: str, field: str) -> dict[str, Any]:
    try:
        value = json.loads(raw or "{}")
    except json.JSONDecodeError as error:
        raise ApiError(
            422, "invalid_form_field", f"{field} must be a JSON object: {error}"
        ) from None
    if not isinstance(value, dict):
        raise ApiError(
            422, "invalid_form_field", f"{field} must be a JSON object, got {type(value).__name__}"
        )
    return value


def _floats(raw: str | None, field: str, channels: int, positive: bool) -> list[float] | None:
    """A JSON list or comma-separated numbers, one per input channel."""
    if raw is None or raw.strip() == "":
        return None
    text = raw.strip()
    try:
        value = (
            json.loads(text) if text.startswith("[") else [float(part) for part in text.split(",")]
        )
        numbers = [float(item) for item in value]
    except (ValueError, TypeError):
        raise ApiError(
            422, "invalid_form_field", f"{field} must be numbers, e.g. [0.1307] or 0.1307"
        ) from None
    if len(numbers) != channels:
        raise ApiError(
            422,
            "invalid_form_field",
            f"{field} needs {channels} value(s), one per input channel; got {len(numbers)}",
        )
    if not all(math.isfinite(number) for number in numbers):
        raise ApiError(422, "invalid_form_field", f"{field} values must be finite numbers")
    if positive and any(number <= 0 for number in numbers):
        raise ApiError(422, "invalid_form_field", f"{field} values must be positive")
    return numbers


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Upload a teacher (safetensors weights of a registry architecture)",
)
def upload_teacher(
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    blobs: BlobsDep,
    settings: SettingsDep,
    response: Response,
    file: Annotated[
        UploadFile, File(description="state_dict saved with safetensors.torch.save_file")
    ],
    architecture: Annotated[
        str | None,
        Form(
            description="a name from GET /v1/architectures (safetensors teachers)",
            examples=["lenet5"],
        ),
    ] = None,
    architecture_kwargs: Annotated[
        str, Form(description='JSON object of constructor arguments, e.g. {"num_classes": 10}')
    ] = "{}",
    name: Annotated[
        str | None, Form(max_length=200, description="defaults to the file name")
    ] = None,
    format: Annotated[
        str,
        Form(
            description="safetensors (weights of a registry architecture; the default and the safe choice), "
            "or, where the operator allows program teachers, torchscript or torch_export (.pt2): these run "
            "the uploader's code and are loaded only in workers"
        ),
    ] = "safetensors",
    input_shape: Annotated[
        str | None, Form(description="program teachers: [C, H, W] as JSON, e.g. [1, 32, 32]")
    ] = None,
    num_classes: Annotated[
        int | None, Form(ge=2, le=100_000, description="program teachers: classes")
    ] = None,
    input_mean: Annotated[
        str | None, Form(description="per-channel mean the teacher was trained with, e.g. [0.1307]")
    ] = None,
    input_std: Annotated[
        str | None, Form(description="per-channel std the teacher was trained with, e.g. [0.3081]")
    ] = None,
    metadata: Annotated[
        UploadFile | None,
        File(
            description="optional activation record for the lopes method (`dfkd record-metadata`)"
        ),
    ] = None,
    idempotency_key: IdempotencyKey = None,
) -> TeacherPublic:
    refuse_declared_oversize(request, settings.max_upload_bytes)
    model: nn.Module | None = None
    if format in PROGRAM_FORMATS:
        if not settings.allow_program_teachers:
            raise ApiError(
                422,
                "program_formats_disabled",
                f"{format} teachers carry code and this deployment does not run uploaded code; "
                "upload safetensors weights of a registry architecture (" + PICKLE_HINT + ")",
            )
        architecture, kwargs = format, {}
        input_shape, num_classes = _program_shape(input_shape, num_classes)
    elif format == "safetensors":
        if not architecture:
            raise ApiError(
                422, "invalid_architecture", "architecture is required for safetensors weights"
            )
        try:
            spec = get_spec(architecture)
            kwargs = spec.resolve_kwargs(**_json_object(architecture_kwargs, "architecture_kwargs"))
            refuse_oversized_model(
                architecture, kwargs, settings.max_teacher_parameters, "DFKD_MAX_TEACHER_PARAMETERS"
            )
            with torch.device("meta"):  # shapes only: the weights' memory is never allocated here
                model = build(architecture, **kwargs)
        except (UnknownArchitectureError, ArchitectureArgumentError) as error:
            raise ApiError(422, "invalid_architecture", str(error)) from None
        input_shape = spec.input_shape(**kwargs)
        num_classes = spec.num_classes(**kwargs)
        # the forward check runs here, in the API: only when its activations are small
        forward_check = (
            forward_peak_bytes(model, input_shape, FORWARD_CHECK_BATCH)
            <= settings.forward_check_max_activation_bytes
        )
    else:
        raise ApiError(
            422,
            "unsupported_format",
            f"format {format!r} is not one of safetensors, {', '.join(PROGRAM_FORMATS)}",
        )
    mean = _floats(input_mean, "input_mean", input_shape[0], positive=False)
    std = _floats(input_std, "input_std", input_shape[0], positive=True)

    upload = spool_upload(file.file, settings.max_upload_bytes)
    try:
        fingerprint = request_fingerprint(
            {
                "file_sha256": upload.sha256,
                "architecture": architecture,
                "architecture_kwargs": kwargs,
                "name": name,
                "format": format,
                "input_mean": mean,
                "input_std": std,
                "metadata_size": metadata.size
                if metadata is not None and metadata.filename
                else None,
            }
        )
        replayed = replay(session, tenant, "teachers", idempotency_key, fingerprint, response)
        if replayed is not None:
            return to_public(owned(session, Teacher, replayed, tenant))
        if model is None:  # a program: structure checked here, loaded (and run) only in a worker
            try:
                check_program_archive(upload.path, 4 * settings.max_upload_bytes)
            except ProgramArchiveError as error:
                raise ApiError(422, "invalid_program", str(error)) from None
        else:
            refuse_unsafe_formats(upload.head)
            try:
                check_weights_file(model, upload.path)
                if forward_check and upload.size <= settings.forward_check_max_bytes:
                    loaded = load_weights(
                        build(architecture, **kwargs), read_state_dict(upload.path)
                    )
                    check_forward(loaded, input_shape, num_classes)
                    del loaded
            except WeightsError as error:
                raise ApiError(422, "invalid_weights", str(error)) from None
        teacher = Teacher(
            id=new_id("tch"),
            tenant_id=tenant,
            name=name or file.filename or "teacher",
            format=format,
            architecture=architecture,
            architecture_kwargs=kwargs,
            input_shape=list(input_shape),
            num_classes=num_classes,
            input_mean=mean,
            input_std=std,
            sha256=upload.sha256,
            size_bytes=upload.size,
            parameter_count=parameter_count(model) if model is not None else 0,
        )
        teacher.blob_key = teacher_weights_key(teacher.id, program=model is None)
        if metadata is not None and metadata.filename:
            if model is None:
                raise ApiError(
                    422, "invalid_metadata", "activation records need a registry architecture"
                )
            _attach_metadata(
                teacher,
                model,
                lambda: weights_file_fingerprint(upload.path),
                metadata,
                blobs,
                settings.max_upload_bytes,
            )
        store_upload(blobs, teacher.blob_key, upload)
    finally:
        upload.path.unlink(missing_ok=True)
    session.add(teacher)
    winner = commit_once(session, tenant, "teachers", idempotency_key, fingerprint, teacher.id)
    return to_public(owned(session, Teacher, winner, tenant))


def _program_shape(
    raw_shape: str | None, num_classes: int | None
) -> tuple[tuple[int, int, int], int]:
    try:
        shape = json.loads(raw_shape or "null")
        valid = (
            isinstance(shape, list)
            and len(shape) == 3
            and all(isinstance(d, int) and 0 < d <= 4096 for d in shape)
        )
    except json.JSONDecodeError:
        valid = False
    if not valid or num_classes is None:
        raise ApiError(
            422,
            "invalid_form_field",
            "program teachers need input_shape as [C, H, W] (JSON) and num_classes",
        )
    return tuple(shape), num_classes


def _attach_metadata(
    teacher: Teacher,
    model: nn.Module,
    fingerprint: Callable[[], str],
    file: UploadFile,
    blobs: BlobsDep,
    limit: int,
) -> None:
    """Validate an activation record against the teacher (`model` on the meta device; the
    weights' `fingerprint`, asked for only once the record's layers fit) and store it beside the
    weights."""
    upload = spool_upload(file.file, limit)
    try:
        refuse_unsafe_formats(upload.head)
        try:
            record = load_metadata(upload.path)
            warning = check_teacher(
                record,
                model,
                tuple(teacher.input_shape),
                fingerprint=fingerprint,
            )
        except MetadataError as error:
            raise ApiError(422, "invalid_metadata", str(error)) from None
        if record.num_classes != teacher.num_classes:
            raise ApiError(
                422,
                "invalid_metadata",
                f"the record has {record.num_classes} classes but the teacher has {teacher.num_classes}",
            )
        teacher.metadata_key = teacher_metadata_key(teacher.id)
        teacher.metadata_info = {
            "record": record.record,
            "stats": record.stats,
            "rank": record.rank,
            "temperature": record.temperature,
            "layers": [layer.name for layer in record.layers],
            "size_bytes": upload.size,
            "sha256": upload.sha256,
            "warning": warning,
        }
        store_upload(blobs, teacher.metadata_key, upload)
    finally:
        upload.path.unlink(missing_ok=True)


def _stored_fingerprint(blobs: BlobsDep, key: str) -> str:
    """The stored weights' fingerprint, copied to a temporary file and read in chunks."""
    with spooled_blob(blobs, key) as weights:
        return weights_file_fingerprint(weights)


@router.put(
    "/{teacher_id}/metadata",
    summary="Attach or replace the teacher's activation record (lopes)",
)
def put_metadata(
    teacher_id: str,
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    blobs: BlobsDep,
    settings: SettingsDep,
    metadata: Annotated[UploadFile, File(description="record made by `dfkd record-metadata`")],
) -> TeacherPublic:
    refuse_declared_oversize(request, settings.max_upload_bytes)
    teacher = owned(session, Teacher, teacher_id, tenant)
    if teacher is None:
        raise ApiError(404, "not_found", f"no teacher {teacher_id!r}")
    if teacher.format != "safetensors":
        raise ApiError(
            422,
            "invalid_metadata",
            f"activation records need a registry architecture; teacher {teacher_id!r} is a "
            f"{teacher.format} program",
        )
    try:
        with torch.device("meta"):  # the layers' shapes; the weights are never loaded here
            model = build(teacher.architecture, **teacher.architecture_kwargs)
    except ArchitectureArgumentError as error:  # stored before the registry's bounds tightened
        raise ApiError(422, "invalid_architecture", str(error)) from None
    _attach_metadata(
        teacher,
        model,
        lambda: _stored_fingerprint(blobs, teacher.blob_key),
        metadata,
        blobs,
        settings.max_upload_bytes,
    )
    session.commit()
    return to_public(teacher)


@router.get("", summary="Teachers, newest first")
def list_teachers(
    session: SessionDep,
    tenant: TenantDep,
    created: CreatedRangeDep,
    limit: PageLimit = 50,
    after: PageAfter = None,
) -> TeachersPublic:
    query = created.apply(select(Teacher).where(Teacher.tenant_id == tenant), Teacher.created_at)
    rows, cursor, more = fetch_page(session, query, Teacher, after, limit)
    return TeachersPublic(items=[to_public(row) for row in rows], next_cursor=cursor, has_more=more)


@router.get("/{teacher_id}", summary="One teacher")
def get_teacher(teacher_id: str, session: SessionDep, tenant: TenantDep) -> TeacherPublic:
    teacher = owned(session, Teacher, teacher_id, tenant)
    if teacher is None:
        raise ApiError(404, "not_found", f"no teacher {teacher_id!r}")
    return to_public(teacher)
