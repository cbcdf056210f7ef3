"""The HTTP answer to a DELETE: 204 when the object is gone, 202 with the deletion while running
jobs stop, 409 for a dataset in use, 503 when storage refused (the deletion finishes later)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Response

from api.errors import ApiError
from api.schemas import DeletionPublic, as_utc
from service.blobstore import BlobStoreError
from service.deletion import DatasetInUseError, DeletionOutcome
from service.models import Deletion

NAMED_JOBS = 10  # a 409 names this many of the jobs in the way


def to_public(record: Deletion, waiting_for: list[str] | None = None) -> DeletionPublic:
    return DeletionPublic(
        id=record.id,
        kind=record.kind,
        object_id=record.object_id,
        reason=record.reason,
        key_id=record.key_id,
        state="deleted" if record.completed_at is not None else "pending",
        waiting_for=waiting_for or [],
        blobs_deleted=record.blobs_deleted,
        requested_at=as_utc(record.requested_at),
        completed_at=as_utc(record.completed_at),
    )


def deletion_answer(delete: Callable[[], DeletionOutcome]) -> Response:
    try:
        outcome = delete()
    except DatasetInUseError as error:
        named = ", ".join(error.job_ids[:NAMED_JOBS])
        more = (
            f" and {len(error.job_ids) - NAMED_JOBS} more"
            if len(error.job_ids) > NAMED_JOBS
            else ""
        )
        raise ApiError(
            409,
            "dataset_in_use",
            f"queued or running jobs read this dataset: {named}{more}; cancel or delete them "
            "(or wait for them to end), then delete the dataset",
        ) from None
    except BlobStoreError as error:
        raise ApiError(
            503,
            "storage_unavailable",
            f"{error}; the object is gone from the API and its remaining files are deleted "
            "once storage is back",
        ) from None
    if outcome.done:
        return Response(status_code=204)
    body = to_public(outcome.record, outcome.waiting_for)
    return Response(body.model_dump_json(), status_code=202, media_type="application/json")
