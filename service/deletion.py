"""Deleting teachers, datasets and jobs: the rows go first, then every blob under the object's
prefix, and a `Deletion` record (who, what, when) outlives them.

A deletion that cannot finish now stays pending (`completed_at` unset): a running job stops at
its cancel first, a teacher waits for its jobs, and blobs the store refused are retried. The
worker finishes a job's pending deletion as soon as the job ends; the reaper finishes any that
are left (`finish_pending`), so none depends on one process staying alive.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import delete, exists, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.blob_keys import dataset_prefix, job_prefix, teacher_prefix
from service.blobstore import BlobStore
from service.job_state import remove_stopped_job, request_cancel
from service.models import (
    Dataset,
    Deletion,
    IdempotencyRecord,
    Job,
    JobStatus,
    Teacher,
    utcnow,
)

log = logging.getLogger(__name__)

Kind = Literal["teacher", "dataset", "job"]
Reason = Literal["request", "cascade", "retention"]
_PREFIXES = {"teacher": teacher_prefix, "dataset": dataset_prefix, "job": job_prefix}


class DatasetInUseError(Exception):
    """A queued or running job reads the dataset: it cannot go before they end."""

    def __init__(self, job_ids: list[str]) -> None:
        super().__init__(", ".join(job_ids))
        self.job_ids = job_ids


@dataclass
class DeletionOutcome:
    record: Deletion
    waiting_for: list[str] = field(default_factory=list)  # jobs still stopping

    @property
    def done(self) -> bool:
        return self.record.completed_at is not None


def pending_deletion(session: Session, object_id: str) -> Deletion | None:
    return session.scalar(
        select(Deletion).where(Deletion.object_id == object_id, Deletion.completed_at.is_(None))
    )


def _record(
    session: Session, tenant: str, key_id: str | None, kind: Kind, object_id: str, reason: Reason
) -> Deletion:
    """The object's pending record (a repeated DELETE while it waits), or a new one."""
    record = pending_deletion(session, object_id)
    if record is None:
        record = Deletion(
            tenant_id=tenant, key_id=key_id, kind=kind, object_id=object_id, reason=reason
        )
        session.add(record)
        session.flush()
    return record


def _job_status(session: Session, job_id: str) -> str | None:
    """Read from the database, not the session's identity map: another process may have moved
    or deleted the job since this session loaded it."""
    return session.scalar(select(Job.status).where(Job.id == job_id))


def _forget_idempotency(session: Session, object_id: str) -> None:
    """An Idempotency-Key retry must not find a deleted object: it makes a new one."""
    session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.resource_id == object_id))


def _remove_row(session: Session, record: Deletion) -> bool:
    """Deletes the object's row; False while it must wait (a job still running, a teacher
    with jobs left). True when the row is gone, also when it already was."""
    if record.kind == "job":
        if remove_stopped_job(session, record.object_id):
            return True
        # not stopped yet, or already gone (a concurrent DELETE, retention)
        return _job_status(session, record.object_id) is None
    if record.kind == "teacher":
        if session.scalar(select(exists().where(Job.teacher_id == record.object_id))):
            return False
        session.execute(delete(Teacher).where(Teacher.id == record.object_id))
        return True
    session.execute(delete(Dataset).where(Dataset.id == record.object_id))
    return True


def finish(session: Session, blobs: BlobStore, record: Deletion) -> bool:
    """Rows first (committed: the object answers 404 from then on), then its blobs; the record
    is completed once the store holds no key of the object. False while it must wait. A store
    error propagates with the record still pending, for the reaper to retry."""
    if not _remove_row(session, record):  # it wrote nothing: the record stays as it is
        return False
    _forget_idempotency(session, record.object_id)
    try:
        session.commit()
    except IntegrityError:  # a job naming it was created meanwhile: nothing was deleted
        session.rollback()
        if record.kind == "dataset":
            raise
        return False  # a teacher: the reaper cascades to the new job, then tries again
    removed = blobs.delete_prefix(_PREFIXES[record.kind](record.object_id))
    record.blobs_deleted = (record.blobs_deleted or 0) + removed
    record.completed_at = utcnow()
    session.commit()
    log.info("deleted %s %s (%d blobs, %s)", record.kind, record.object_id, removed, record.reason)
    if record.kind == "job":  # it may have been the last job of a teacher being deleted
        _finish_teachers_waiting(session, blobs)
    return True


def _finish_teachers_waiting(session: Session, blobs: BlobStore) -> None:
    waiting = session.scalars(
        select(Deletion).where(Deletion.kind == "teacher", Deletion.completed_at.is_(None))
    ).all()
    for record in waiting:
        finish(session, blobs, record)


def delete_job(
    session: Session,
    blobs: BlobStore,
    job_id: str,
    tenant: str,
    key_id: str | None,
    reason: Reason = "request",
) -> DeletionOutcome:
    """A stopped job goes now; a queued one is cancelled and goes now; a running one is asked to
    stop, and goes when it has (the worker or the reaper finishes the record)."""
    record = _record(session, tenant, key_id, "job", job_id, reason)
    request_cancel(session, job_id)
    session.commit()
    if finish(session, blobs, record):
        return DeletionOutcome(record)
    return DeletionOutcome(record, [job_id])


def delete_teacher(
    session: Session, blobs: BlobStore, teacher_id: str, tenant: str, key_id: str | None
) -> DeletionOutcome:
    """The teacher and every job made from it; running jobs are cancelled and the teacher goes
    once the last of them has stopped."""
    record = _record(session, tenant, key_id, "teacher", teacher_id, "request")
    jobs = _cascade_to_jobs(session, record)
    waiting = [
        job_id for job_id, job_record in jobs.items() if not finish(session, blobs, job_record)
    ]
    if not waiting:
        session.refresh(record)
        if record.completed_at is None:
            finish(session, blobs, record)
    return DeletionOutcome(record, waiting)


def _cascade_to_jobs(session: Session, teacher_record: Deletion) -> dict[str, Deletion]:
    """Every job of the teacher gets its deletion (asked by whoever deleted the teacher) and is
    cancelled; committed. Also run by the reaper, for a job made while the teacher was going."""
    job_ids = session.scalars(select(Job.id).where(Job.teacher_id == teacher_record.object_id))
    records = {}
    for job_id in list(job_ids):
        records[job_id] = _record(
            session, teacher_record.tenant_id, teacher_record.key_id, "job", job_id, "cascade"
        )
        request_cancel(session, job_id)
    session.commit()
    return records


def jobs_reading_dataset(session: Session, dataset_id: str) -> list[str]:
    reads = or_(Job.evaluation_dataset_id == dataset_id, Job.few_shot_dataset_id == dataset_id)
    active = Job.status.in_((JobStatus.queued, JobStatus.running))
    return list(session.scalars(select(Job.id).where(reads, active).order_by(Job.created_at)))


def delete_dataset(
    session: Session, blobs: BlobStore, dataset_id: str, tenant: str, key_id: str | None
) -> DeletionOutcome:
    """Refused (DatasetInUseError) while a queued or running job reads it; finished jobs keep
    their reports and lose the reference."""
    readers = jobs_reading_dataset(session, dataset_id)
    if readers:
        raise DatasetInUseError(readers)
    record = _record(session, tenant, key_id, "dataset", dataset_id, "request")
    for column in (Job.evaluation_dataset_id, Job.few_shot_dataset_id):
        session.execute(
            update(Job)
            .where(column == dataset_id)
            .values({column.key: None})
            .execution_options(synchronize_session=False)
        )
    try:
        finish(session, blobs, record)
    except IntegrityError:  # a job naming it was created meanwhile: nothing was deleted
        session.rollback()
        raise DatasetInUseError(jobs_reading_dataset(session, dataset_id)) from None
    return DeletionOutcome(record)


def finish_pending(session: Session, blobs: BlobStore, object_id: str | None = None) -> int:
    """Finishes the pending deletions (of one object, given `object_id`) that can finish now;
    returns how many did."""
    query = select(Deletion).where(Deletion.completed_at.is_(None)).order_by(Deletion.id)
    if object_id is not None:
        query = query.where(Deletion.object_id == object_id)
    done = 0
    for record in session.scalars(query).all():
        queued = _job_status(session, record.object_id) == JobStatus.queued
        if record.kind == "job" and queued:  # its worker died and the reaper requeued it
            request_cancel(session, record.object_id)
            session.commit()
        if record.kind == "teacher":
            _cascade_to_jobs(session, record)
        if record.completed_at is None and finish(session, blobs, record):
            done += 1
    return done
