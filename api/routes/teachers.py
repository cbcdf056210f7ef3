from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, Response, UploadFile, status
from sqlalchemy import select

from api.deletions import deletion_answer
from api.deps import (
    BlobsDep,
    IdempotencyKey,
    KeyIdDep,
    SessionDep,
    SettingsDep,
    TenantDep,
    owned,
    replay,
)
from api.errors import ApiError
from api.pagination import CreatedRangeDep, PageAfter, PageLimit, fetch_page
from api.quota_checks import claim_storage, refuse_over_storage
from api.schemas import DeletionPublic, TeacherPublic, TeachersPublic, as_utc
from api.teacher_upload import (
    attach_metadata,
    attach_uploaded_metadata,
    check_teacher_file,
    declared_onnx,
    declared_teacher,
    meta_model,
    new_teacher,
    normalisation,
    stored_weights_fingerprint,
    upload_fingerprint,
)
from api.uploads import refuse_declared_oversize, spool_upload, store_upload
from service.deletion import delete_teacher as delete_teacher_and_jobs
from service.idempotency import commit_once
from service.models import Teacher

router = APIRouter(prefix="/v1/teachers", tags=["teachers"])

# The upload's form fields, declared once so that the route's signature reads as its contract.
WeightsFile = Annotated[
    UploadFile,
    File(description="state_dict saved with safetensors.torch.save_file, or an .onnx graph"),
]
ArchitectureField = Annotated[
    str | None,
    Form(
        description="safetensors teachers: a registry name, torchvision:<name> or timm:<name> "
        "(GET /v1/architectures?q=...)",
        examples=["lenet5", "torchvision:resnet18", "timm:resnet18"],
    ),
]
ArchitectureKwargsField = Annotated[
    str, Form(description='JSON object of constructor arguments, e.g. {"num_classes": 10}')
]
NameField = Annotated[str | None, Form(max_length=200, description="defaults to the file name")]
FormatField = Annotated[
    str,
    Form(
        description="safetensors (weights of a registry, torchvision or timm architecture; the "
        "default), onnx (a graph: shapes read from it, converted to torch, no code runs), or, "
        "where the operator allows program teachers, torchscript or torch_export (.pt2): these "
        "run the uploader's code and are loaded only in workers"
    ),
]
InputShapeField = Annotated[
    str | None,
    Form(
        description="[C, H, W] as JSON, e.g. [1, 32, 32]: program teachers, and torchvision / "
        "timm teachers at a size other than the library's default"
    ),
]
NumClassesField = Annotated[
    int | None, Form(ge=2, le=100_000, description="program teachers: classes")
]
InputMeanField = Annotated[
    str | None, Form(description="per-channel mean the teacher was trained with, e.g. [0.1307]")
]
InputStdField = Annotated[
    str | None, Form(description="per-channel std the teacher was trained with, e.g. [0.3081]")
]
MetadataFile = Annotated[
    UploadFile | None,
    File(
        description="optional activation record for the metadata methods (`dfkd record-metadata`)"
    ),
]


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
        parameter_count=teacher.parameter_count
        if teacher.format in ("safetensors", "onnx")
        else None,
        metadata=teacher.metadata_info,
        conversion=teacher.conversion,
        task_type=teacher.task_type,
        created_at=as_utc(teacher.created_at),
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Upload a teacher (safetensors weights of a named architecture, or an ONNX graph)",
)
def upload_teacher(
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    blobs: BlobsDep,
    settings: SettingsDep,
    response: Response,
    file: WeightsFile,
    architecture: ArchitectureField = None,
    architecture_kwargs: ArchitectureKwargsField = "{}",
    name: NameField = None,
    format: FormatField = "safetensors",
    input_shape: InputShapeField = None,
    num_classes: NumClassesField = None,
    input_mean: InputMeanField = None,
    input_std: InputStdField = None,
    metadata: MetadataFile = None,
    idempotency_key: IdempotencyKey = None,
) -> TeacherPublic:
    refuse_declared_oversize(request, settings.max_upload_bytes)
    declared = declared_teacher(
        format, architecture, architecture_kwargs, input_shape, num_classes, settings
    )
    if declared.format != "onnx":  # an ONNX teacher's channels are read from its graph
        scaling = normalisation(input_mean, input_std, channels=declared.input_shape[0])
    record = metadata if metadata is not None and metadata.filename else None
    upload = spool_upload(file.file, settings.max_upload_bytes)
    try:
        if declared.format == "onnx":
            declared = declared_onnx(declared, upload)
            scaling = normalisation(input_mean, input_std, channels=declared.input_shape[0])
        fingerprint = upload_fingerprint(declared, upload, name, scaling, record)
        replayed = replay(session, tenant, "teachers", idempotency_key, fingerprint, response)
        if replayed is not None:
            return to_public(owned(session, Teacher, replayed, tenant))
        adding = upload.size + (record.size or 0 if record is not None else 0)  # weights + record
        refuse_over_storage(session, tenant, settings, adding)
        check_teacher_file(declared, upload, settings)
        teacher = new_teacher(declared, upload, tenant, name or file.filename or "teacher", scaling)
        if record is not None:
            limit = settings.max_upload_bytes
            attach_uploaded_metadata(teacher, declared, upload, record, blobs, limit)
        store_upload(blobs, teacher.blob_key, upload)
    finally:
        upload.path.unlink(missing_ok=True)
    stored = (teacher.blob_key, teacher.metadata_key)
    claim_storage(session, tenant, settings, adding, blobs, [key for key in stored if key])
    session.add(teacher)
    winner = commit_once(session, tenant, "teachers", idempotency_key, fingerprint, teacher.id)
    return to_public(owned(session, Teacher, winner, tenant))


@router.put(
    "/{teacher_id}/metadata",
    summary="Attach or replace the teacher's activation record (metadata methods)",
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
    previous = (teacher.metadata_info or {}).get("size_bytes", 0)
    refuse_over_storage(session, tenant, settings, metadata.size or 0, freeing=previous)
    attach_metadata(
        teacher,
        meta_model(teacher),
        lambda: stored_weights_fingerprint(blobs, teacher.blob_key),
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


@router.delete(
    "/{teacher_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a teacher, its jobs and every file they made",
    responses={
        202: {
            "model": DeletionPublic,
            "description": "running jobs were cancelled; the object goes once they have stopped",
        }
    },
)
def delete_teacher(
    teacher_id: str, session: SessionDep, tenant: TenantDep, key_id: KeyIdDep, blobs: BlobsDep
) -> Response:
    if owned(session, Teacher, teacher_id, tenant) is None:
        raise ApiError(404, "not_found", f"no teacher {teacher_id!r}")
    return deletion_answer(
        lambda: delete_teacher_and_jobs(session, blobs, teacher_id, tenant, key_id)
    )
