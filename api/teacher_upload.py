"""What an uploaded teacher must pass before it is stored: the model it declares (a registry
architecture, built on the meta device, or a program's declared shapes), its file checked against
that model, and its optional activation record. Each refusal is a 422 with a code to act on."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch
from fastapi import UploadFile
from torch import nn

from api.errors import ApiError
from api.model_limits import refuse_oversized_model
from api.uploads import (
    PICKLE_HINT,
    SpooledUpload,
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
from core.models.library import is_library_name
from core.onnx_teacher import OnnxTeacherError, check_onnx_teacher
from core.programs import PROGRAM_FORMATS, ProgramArchiveError, check_program_archive
from core.segmentation import task_of_output
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
from service.blobstore import BlobStore
from service.idempotency import request_fingerprint
from service.models import Teacher, new_id
from service.settings import Settings


@dataclass(frozen=True)
class DeclaredTeacher:
    """The model an upload claims to be, known before its file is read."""

    format: str
    architecture: str
    kwargs: dict[str, Any]
    input_shape: tuple[int, int, int]
    num_classes: int
    model: nn.Module | None  # a registry architecture on the meta device; None for a program
    forward_check: bool = False  # whether its activations are small enough to run it here
    parameter_count: int | None = None  # an ONNX graph's, read from its initialisers
    conversion: dict[str, Any] | None = None  # an ONNX graph's conversion, checked at upload
    task_type: str = "classification"  # "segmentation": per-pixel logits [N, K, H, W]


def declared_teacher(
    format: str,
    architecture: str | None,
    architecture_kwargs: str,
    input_shape: str | None,
    num_classes: int | None,
    settings: Settings,
) -> DeclaredTeacher:
    if format in PROGRAM_FORMATS:
        return _declared_program(format, input_shape, num_classes, settings)
    if format == "safetensors":
        return _declared_architecture(architecture, architecture_kwargs, input_shape, settings)
    if format == "onnx":  # its shapes are read from the graph once the file is in
        return DeclaredTeacher("onnx", "onnx", {}, (0, 0, 0), 0, model=None)
    raise ApiError(
        422,
        "unsupported_format",
        f"format {format!r} is not one of safetensors, onnx, {', '.join(PROGRAM_FORMATS)}",
    )


def declared_onnx(declared: DeclaredTeacher, upload: SpooledUpload) -> DeclaredTeacher:
    """An ONNX teacher as its graph declares it: checked (operators, opset, one dynamic-batch
    image input, [N, classes] logits), converted, and compared with onnxruntime."""
    if declared.format != "onnx":
        return declared
    refuse_unsafe_formats(upload.head)
    try:
        facts, difference = check_onnx_teacher(upload.path)
    except OnnxTeacherError as error:
        raise ApiError(422, "invalid_onnx", str(error)) from None
    return replace(
        declared,
        input_shape=facts.input_shape,
        num_classes=facts.num_classes,
        parameter_count=facts.parameter_count,
        task_type=facts.task_type,
        conversion={
            "converter": "onnx2torch",
            "opset": facts.opset,
            "input_name": facts.input_name,
            "max_abs_difference": difference,
        },
    )


def _parsed_shape(raw_shape: str | None) -> tuple[int, int, int] | None:
    try:
        shape = json.loads(raw_shape or "null")
    except json.JSONDecodeError:
        return None
    valid = (
        isinstance(shape, list)
        and len(shape) == 3
        and all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 4096 for d in shape)
    )
    return (shape[0], shape[1], shape[2]) if valid else None


def _declared_program(
    format: str, raw_shape: str | None, num_classes: int | None, settings: Settings
) -> DeclaredTeacher:
    if not settings.allow_program_teachers:
        raise ApiError(
            422,
            "program_formats_disabled",
            f"{format} teachers carry code and this deployment does not run uploaded code; "
            "upload safetensors weights of a registry architecture (" + PICKLE_HINT + "), "
            "or an ONNX export (format=onnx)",
        )
    shape = _parsed_shape(raw_shape)
    if shape is None or num_classes is None:
        raise ApiError(
            422,
            "invalid_form_field",
            "program teachers need input_shape as [C, H, W] (JSON) and num_classes",
        )
    return DeclaredTeacher(format, format, {}, shape, num_classes, model=None)


def _library_input_shape(
    architecture: str, model: nn.Module, default: tuple[int, int, int], raw_shape: str | None
) -> tuple[tuple[int, int, int], int, str]:
    """A torchvision / timm teacher's input (given as input_shape, else the library's default),
    its classes and its task, read off one forward pass on the meta device."""
    shape = default if raw_shape is None or raw_shape.strip() == "" else _parsed_shape(raw_shape)
    if shape is None:
        raise ApiError(422, "invalid_form_field", "input_shape must be [C, H, W] as JSON")
    try:
        with torch.no_grad():  # eval: one input, BatchNorm on its running statistics
            logits = model.eval()(torch.empty(1, *shape, device="meta"))
    except Exception as error:  # a library model refuses inputs it cannot take in many ways
        raise ApiError(
            422,
            "invalid_architecture",
            f"{architecture} does not take inputs of shape {list(shape)}: {error}",
        ) from None
    task = task_of_output(logits.shape) if isinstance(logits, torch.Tensor) else None
    if task is None:
        raise ApiError(
            422,
            "invalid_architecture",
            f"{architecture} does not give [batch, classes] or per-pixel [batch, classes, H, W] "
            "logits",
        )
    return shape, int(logits.shape[1]), task


def _declared_architecture(
    architecture: str | None, architecture_kwargs: str, raw_shape: str | None, settings: Settings
) -> DeclaredTeacher:
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
    num_classes = spec.num_classes(**kwargs) if not is_library_name(architecture) else 0
    task_type = spec.task
    if is_library_name(architecture):
        input_shape, num_classes, task_type = _library_input_shape(
            architecture, model, input_shape, raw_shape
        )
    # the forward check runs here, in the API: only when its activations are small
    forward_check = (
        forward_peak_bytes(model, input_shape, FORWARD_CHECK_BATCH)
        <= settings.forward_check_max_activation_bytes
    )
    return DeclaredTeacher(
        "safetensors",
        architecture,
        kwargs,
        input_shape,
        num_classes,
        model=model,
        forward_check=forward_check,
        task_type=task_type,
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


@dataclass(frozen=True)
class Normalisation:
    """The per-channel mean and std the teacher was trained with (None: inputs used as they are)."""

    mean: list[float] | None
    std: list[float] | None


def normalisation(mean: str | None, std: str | None, channels: int) -> Normalisation:
    return Normalisation(
        _per_channel(mean, "input_mean", channels, positive=False),
        _per_channel(std, "input_std", channels, positive=True),
    )


def _per_channel(raw: str | None, field: str, channels: int, positive: bool) -> list[float] | None:
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


def upload_fingerprint(
    declared: DeclaredTeacher,
    upload: SpooledUpload,
    name: str | None,
    normalisation: Normalisation,
    metadata: UploadFile | None,
) -> str:
    """What makes two uploads the same request, for Idempotency-Key replays."""
    return request_fingerprint(
        {
            "file_sha256": upload.sha256,
            "architecture": declared.architecture,
            "architecture_kwargs": declared.kwargs,
            "name": name,
            "format": declared.format,
            "input_mean": normalisation.mean,
            "input_std": normalisation.std,
            "metadata_size": metadata.size if metadata is not None else None,
        }
    )


def check_teacher_file(
    declared: DeclaredTeacher, upload: SpooledUpload, settings: Settings
) -> None:
    """A program's archive structure (it is loaded, and run, only in a worker); or the weights
    against the declared architecture, and one forward pass where that is cheap enough here."""
    if declared.format == "onnx":  # checked, converted and run as it was declared
        return
    if declared.model is None:
        try:
            check_program_archive(upload.path, 4 * settings.max_upload_bytes)
        except ProgramArchiveError as error:
            raise ApiError(422, "invalid_program", str(error)) from None
        return
    refuse_unsafe_formats(upload.head)
    try:
        check_weights_file(declared.model, upload.path)
        if declared.forward_check and upload.size <= settings.forward_check_max_bytes:
            loaded = load_weights(
                build(declared.architecture, **declared.kwargs), read_state_dict(upload.path)
            )
            check_forward(loaded, declared.input_shape, declared.num_classes, declared.task_type)
    except WeightsError as error:
        raise ApiError(422, "invalid_weights", str(error)) from None


def new_teacher(
    declared: DeclaredTeacher,
    upload: SpooledUpload,
    tenant: str,
    name: str,
    normalisation: Normalisation,
) -> Teacher:
    teacher = Teacher(
        id=new_id("tch"),
        tenant_id=tenant,
        name=name,
        format=declared.format,
        architecture=declared.architecture,
        architecture_kwargs=declared.kwargs,
        input_shape=list(declared.input_shape),
        num_classes=declared.num_classes,
        input_mean=normalisation.mean,
        input_std=normalisation.std,
        sha256=upload.sha256,
        size_bytes=upload.size,
        parameter_count=parameter_count(declared.model)
        if declared.model is not None
        else declared.parameter_count or 0,
        conversion=declared.conversion,
        task_type=declared.task_type,
    )
    teacher.blob_key = teacher_weights_key(teacher.id, program=declared.model is None)
    return teacher


def attach_uploaded_metadata(
    teacher: Teacher,
    declared: DeclaredTeacher,
    weights: SpooledUpload,
    file: UploadFile,
    blobs: BlobStore,
    limit: int,
) -> None:
    """The activation record sent with the weights, checked against them."""
    if declared.model is None:
        raise ApiError(422, "invalid_metadata", "activation records need a registry architecture")
    fingerprint = partial(weights_file_fingerprint, weights.path)
    attach_metadata(teacher, declared.model, fingerprint, file, blobs, limit)


def attach_metadata(
    teacher: Teacher,
    model: nn.Module,
    fingerprint: Callable[[], str],
    file: UploadFile,
    blobs: BlobStore,
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


def stored_weights_fingerprint(blobs: BlobStore, key: str) -> str:
    """The stored weights' fingerprint, copied to a temporary file and read in chunks."""
    with spooled_blob(blobs, key) as weights:
        return weights_file_fingerprint(weights)


def meta_model(teacher: Teacher) -> nn.Module:
    """A stored registry teacher's layers, for checking a record against; no weights loaded."""
    try:
        with torch.device("meta"):
            return build(teacher.architecture, **teacher.architecture_kwargs)
    except ArchitectureArgumentError as error:  # stored before the registry's bounds tightened
        raise ApiError(422, "invalid_architecture", str(error)) from None
