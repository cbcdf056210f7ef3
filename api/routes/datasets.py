from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, Response, UploadFile, status
from sqlalchemy import select

from api.deletions import deletion_answer
from api.deps import BlobsDep, KeyIdDep, SessionDep, SettingsDep, TenantDep, owned
from api.errors import ApiError
from api.pagination import CreatedRangeDep, PageAfter, PageLimit, fetch_page
from api.quota_checks import claim_storage, refuse_over_storage
from api.schemas import DatasetPublic, DatasetsPublic, as_utc
from api.uploads import refuse_declared_oversize, spool_upload, store_upload
from core.dataset_scan import scan_labelled
from core.datasets import DatasetFormatError
from service.blob_keys import dataset_key
from service.deletion import delete_dataset as delete_dataset_and_files
from service.models import Dataset, new_id

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


def to_public(dataset: Dataset) -> DatasetPublic:
    return DatasetPublic(
        id=dataset.id,
        name=dataset.name,
        format=dataset.format,
        sha256=dataset.sha256,
        size_bytes=dataset.size_bytes,
        num_examples=dataset.num_examples,
        image_shape=dataset.image_shape,
        pixel_dtype=dataset.pixel_dtype,
        class_counts={int(k): v for k, v in dataset.class_counts.items()},
        task_type=dataset.task_type,
        created_at=as_utc(dataset.created_at),
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Upload a labelled image set (labels or masks) for evaluation or few-shot fine-tuning",
)
def upload_dataset(
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    blobs: BlobsDep,
    settings: SettingsDep,
    file: Annotated[
        UploadFile,
        File(
            description=(
                "npz (no pickles) or safetensors with `images` [N, C, H, W] (or [N, H, W]) and integer "
                "`labels` [N] (classification) or integer `masks` [N, H, W] (segmentation: class "
                "indices, 255 = ignore). uint8 images are pixels: they are scaled to [0, 1] and normalised with the "
                "teacher's input_mean/input_std. Float images are taken as already in the teacher's input space."
            )
        ),
    ],
    name: Annotated[
        str | None, Form(max_length=200, description="defaults to the file name")
    ] = None,
) -> DatasetPublic:
    refuse_declared_oversize(request, settings.max_upload_bytes)
    upload = spool_upload(file.file, settings.max_upload_bytes)
    try:
        refuse_over_storage(session, tenant, settings, upload.size)
        try:
            # headers, then values chunk by chunk: memory stays flat whatever the file's size
            data = scan_labelled(upload.path, settings.max_dataset_array_bytes)
        except DatasetFormatError as error:
            raise ApiError(422, "invalid_dataset", str(error)) from None
        dataset = Dataset(
            id=new_id("dst"),
            tenant_id=tenant,
            name=name or file.filename or "dataset",
            format=data.format,
            sha256=upload.sha256,
            size_bytes=upload.size,
            num_examples=data.num_examples,
            image_shape=list(data.image_shape),
            pixel_dtype=data.pixel_dtype,
            class_counts={str(k): v for k, v in data.class_counts.items()},
            task_type=data.task_type,
        )
        dataset.blob_key = dataset_key(dataset.id, dataset.format)
        store_upload(blobs, dataset.blob_key, upload)
    finally:
        upload.path.unlink(missing_ok=True)
    claim_storage(session, tenant, settings, dataset.size_bytes, blobs, [dataset.blob_key])
    session.add(dataset)
    session.commit()
    return to_public(dataset)


@router.get("", summary="Datasets, newest first")
def list_datasets(
    session: SessionDep,
    tenant: TenantDep,
    created: CreatedRangeDep,
    limit: PageLimit = 50,
    after: PageAfter = None,
) -> DatasetsPublic:
    query = created.apply(select(Dataset).where(Dataset.tenant_id == tenant), Dataset.created_at)
    rows, cursor, more = fetch_page(session, query, Dataset, after, limit)
    return DatasetsPublic(items=[to_public(row) for row in rows], next_cursor=cursor, has_more=more)


@router.get("/{dataset_id}", summary="One dataset")
def get_dataset(dataset_id: str, session: SessionDep, tenant: TenantDep) -> DatasetPublic:
    dataset = owned(session, Dataset, dataset_id, tenant)
    if dataset is None:
        raise ApiError(404, "not_found", f"no dataset {dataset_id!r}")
    return to_public(dataset)


@router.delete(
    "/{dataset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a dataset and its file",
    description="Refused with 409 `dataset_in_use` (naming the jobs) while a queued or running "
    "job reads it; finished jobs keep their reports and lose the reference.",
)
def delete_dataset(
    dataset_id: str, session: SessionDep, tenant: TenantDep, key_id: KeyIdDep, blobs: BlobsDep
) -> Response:
    if owned(session, Dataset, dataset_id, tenant) is None:
        raise ApiError(404, "not_found", f"no dataset {dataset_id!r}")
    return deletion_answer(
        lambda: delete_dataset_and_files(session, blobs, dataset_id, tenant, key_id)
    )
