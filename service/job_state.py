"""Job state transitions as single conditional UPDATEs, shared by the API and the workers."""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, literal, or_, select, update
from sqlalchemy.orm import Session

from core.messages import bounded
from service.models import (
    FINAL_STATUSES,
    Job,
    JobArtifact,
    JobEvent,
    JobStatus,
    MetricPoint,
    utcnow,
)


def add_event(session: Session, job_id: str, kind: str, message: str) -> None:
    session.add(JobEvent(job_id=job_id, kind=kind, message=bounded(message)))


def claim_job(session: Session, job_id: str, lease_seconds: float, max_attempts: int) -> bool:
    """queued -> running in one UPDATE; a second delivery of the same job finds nothing to claim.

    A running job whose lease lapsed (its worker died) can be claimed again.
    """
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.cancel_requested.is_(False),
            Job.attempts < max_attempts,
            or_(
                Job.status == JobStatus.queued,
                (Job.status == JobStatus.running) & (Job.lease_expires_at < now),
            ),
        )
        .values(
            status=JobStatus.running,
            attempts=Job.attempts + 1,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            started_at=now,
            error_code=None,
            error_message=None,
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def renew_lease(
    session: Session, job_id: str, lease_seconds: float, attempt: int | None = None, **progress: Any
) -> bool:
    """Extend the lease and record progress; False if the job is no longer ours to run.

    `attempt` fences a worker that was presumed dead (its lease lapsed and the job went to
    another worker): its renewals and its end no longer match."""
    condition = (Job.id == job_id) & (Job.status == JobStatus.running)
    if attempt is not None:
        condition = condition & (Job.attempts == attempt)
    result = session.execute(
        update(Job)
        .where(condition)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds), **progress)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def finish_job(
    session: Session, job_id: str, status: JobStatus, attempt: int | None = None, **values: Any
) -> bool:
    """running -> a final state; returns False when the job was not running (or, given
    `attempt`, was running another attempt)."""
    condition = (Job.id == job_id) & (Job.status == JobStatus.running)
    if attempt is not None:
        condition = condition & (Job.attempts == attempt)
    if values.get("error_message") is not None:  # may quote the job's input
        values["error_message"] = bounded(values["error_message"])
    result = session.execute(
        update(Job)
        .where(condition)
        .values(status=status, finished_at=utcnow(), lease_expires_at=None, **values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


class CancelOutcome(enum.StrEnum):
    cancelled = "cancelled"  # it was queued: it ends now, no worker will run it
    requested = "requested"  # it is running: its loop stops at its next check
    already_ended = "already_ended"  # it ended (or never existed) before the UPDATE


def request_cancel(session: Session, job_id: str) -> CancelOutcome:
    """A queued job is cancelled at once; a running one gets the flag its loop polls.

    One conditional UPDATE decides on the row as it is when the UPDATE runs, so a job that
    started or ended since the caller read it gets the answer its state at that moment calls for.
    """
    queued = Job.status == JobStatus.queued
    new_status = session.scalar(
        update(Job)
        .where(Job.id == job_id, Job.status.in_((JobStatus.queued, JobStatus.running)))
        .values(
            status=case((queued, literal(JobStatus.cancelled)), else_=Job.status),
            finished_at=case((queued, utcnow()), else_=Job.finished_at),
            cancel_requested=Job.cancel_requested | (Job.status == JobStatus.running),
        )
        .returning(Job.status)
        .execution_options(synchronize_session=False)
    )
    if new_status is None:
        return CancelOutcome.already_ended
    if new_status == JobStatus.cancelled:
        add_event(session, job_id, "state", "cancelled before it started")
        return CancelOutcome.cancelled
    add_event(session, job_id, "info", "cancel requested; the job stops at its next check")
    return CancelOutcome.requested


def fail_unqueued(session: Session, job_id: str, code: str, message: str) -> bool:
    """queued -> failed for a job whose message never reached the broker; False when the job
    left the queue meanwhile (a worker or a cancel got to it), which then stands."""
    message = bounded(message)
    moved = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued)
        .values(
            status=JobStatus.failed, finished_at=utcnow(), error_code=code, error_message=message
        )
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:
        return False
    add_event(session, job_id, "error", message)
    return True


def cancel_requested(session: Session, job_id: str) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def drop_metrics_after(session: Session, job_id: str, step: int) -> None:
    """A resumed job repeats the steps after its checkpoint; their old points, and the rows of
    their sample grids (the repeat writes the grids again, under the same keys), go first."""
    session.execute(
        delete(MetricPoint).where(MetricPoint.job_id == job_id, MetricPoint.step > step)
    )
    session.execute(
        delete(JobArtifact).where(
            JobArtifact.job_id == job_id, JobArtifact.kind == "samples", JobArtifact.step > step
        )
    )


def next_queued_job(session: Session) -> str | None:
    return session.scalar(
        select(Job.id)
        .where(Job.status == JobStatus.queued)
        .order_by(Job.created_at, Job.id)
        .limit(1)
    )


def requeue_orphans(session: Session, before: datetime | None = None) -> list[str]:
    """Running jobs whose lease lapsed (or every running job, when `before` is None: the
    embedded runner is the only worker, so at its start nothing can still be running)."""
    condition = Job.status == JobStatus.running
    if before is not None:
        condition = condition & (Job.lease_expires_at < before)
    ids = list(session.scalars(select(Job.id).where(condition)))
    if ids:
        session.execute(
            update(Job)
            .where(Job.id.in_(ids))
            .values(status=JobStatus.queued, lease_expires_at=None)
        )
        for job_id in ids:
            add_event(session, job_id, "state", "requeued: its worker stopped before finishing")
    return ids


def lapse_lease(session: Session, job_id: str) -> bool:
    """Ends a running job's lease now: its worker is known to be dead (the embedded runner's
    monitor saw the process exit), so the reaper's next pass returns it without waiting out the
    lease. False when the job is no longer running."""
    moved = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.running)
        .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        .execution_options(synchronize_session=False)
    )
    return moved.rowcount == 1


def lapsed_leases(session: Session) -> list[tuple[str, int, datetime | None]]:
    """(job id, attempts, started at) of running jobs whose lease lapsed: their worker died
    without a word, or was killed at the hard time limit."""
    rows = session.execute(
        select(Job.id, Job.attempts, Job.started_at).where(
            Job.status == JobStatus.running, Job.lease_expires_at < utcnow()
        )
    )
    return [(job_id, attempts, started) for job_id, attempts, started in rows]


def reap_lapsed(
    session: Session,
    job_id: str,
    attempts: int,
    max_attempts: int,
    started_at: datetime | None = None,
    hard_limit_seconds: float | None = None,
) -> JobStatus | None:
    """One conditional UPDATE: a lapsed job goes back to queued; or fails with `time_limit` when
    its attempt ran past the hard time limit (the pool killed it), or `too_many_attempts` once it
    used its attempts. Returns the new status, or None when another reaper (or a late renewal)
    got there first, so only one reaper ever re-enqueues it."""
    now = utcnow()
    if started_at is not None and started_at.tzinfo is None:
        started_at = started_at.replace(tzinfo=now.tzinfo)  # SQLite hands back naive UTC
    ran = (now - started_at).total_seconds() if started_at is not None else 0.0
    if hard_limit_seconds is not None and ran >= hard_limit_seconds:
        code = "time_limit"
        message = (
            f"attempt {attempts} ran {ran:.0f}s, past the hard time limit of "
            f"{hard_limit_seconds:.0f}s, and was killed"
        )
    elif attempts >= max_attempts:
        code = "too_many_attempts"
        message = (
            f"the job's worker stopped without finishing {attempts} times (its lease lapsed); "
            f"giving up after {max_attempts} attempts"
        )
    else:
        code = None
        message = (
            f"requeued: the lease of attempt {attempts} lapsed (its worker stopped); "
            "the next attempt resumes from the last checkpoint"
        )
    status = JobStatus.queued if code is None else JobStatus.failed
    values: dict[str, Any] = {}
    if code is not None:
        values = {"finished_at": now, "error_code": code, "error_message": message}
    moved = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.status == JobStatus.running,
            Job.lease_expires_at < now,
            Job.attempts == attempts,
        )
        .values(status=status, lease_expires_at=None, **values)
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:
        return None
    add_event(session, job_id, "error" if code else "state", message)
    return status


def fail_out_of_attempts(session: Session, job_id: str, max_attempts: int) -> bool:
    """A delivery that finds its job's last attempt lapsed ends the job as the reaper would (its
    message, its UPDATE), without waiting for the reaper's next pass. False when there is
    nothing to end: the job is not running, its lease holds, or it has attempts left."""
    attempts = session.scalar(
        select(Job.attempts).where(
            Job.id == job_id,
            Job.status == JobStatus.running,
            Job.lease_expires_at < utcnow(),
            Job.attempts >= max_attempts,
        )
    )
    if attempts is None:
        return False
    return reap_lapsed(session, job_id, attempts, max_attempts) == JobStatus.failed


def remove_stopped_job(session: Session, job_id: str) -> bool:
    """Deletes the row of a job that has stopped (its events, metrics and artifact rows go with it
    by the foreign keys' ON DELETE CASCADE). False while it is queued or running: a deletion
    waits for its cancel to land."""
    removed = session.execute(
        delete(Job)
        .where(Job.id == job_id, Job.status.in_(FINAL_STATUSES))
        .execution_options(synchronize_session=False)
    )
    return removed.rowcount == 1


def expired_jobs(session: Session, finished_before: datetime, limit: int) -> list[str]:
    """Jobs that ended before `finished_before`, oldest first: retention deletes them."""
    return list(
        session.scalars(
            select(Job.id)
            .where(Job.status.in_(FINAL_STATUSES), Job.finished_at < finished_before)
            .order_by(Job.finished_at, Job.id)
            .limit(limit)
        )
    )
