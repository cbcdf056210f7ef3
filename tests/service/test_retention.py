"""Retention and the deletions the reaper finishes, on SQLite and PostgreSQL with the folder store:
old finished jobs go with every file, recent and unfinished ones stay, and a deletion whose
worker died is finished by the reaper's pass."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from service.blob_keys import checkpoint_key, samples_key, student_key
from service.blobstore import LocalBlobStore
from service.db import session_scope
from service.deletion import delete_job
from service.job_state import claim_job, finish_job, request_cancel
from service.models import Deletion, Job, JobStatus, utcnow
from service.retention import drop_checkpoint
from service.settings import Settings
from tests.service.test_job_state import make_job, sessions  # noqa: F401 (the fixture)
from worker.context import WorkerContext
from worker.reaper import reap_once, tidy_once


def context_for(
    factory: sessionmaker[Session], tmp_path: Path, **settings: object
) -> WorkerContext:
    return WorkerContext(
        settings=Settings(data_dir=tmp_path, **settings),
        sessions=factory,
        blobs=LocalBlobStore(tmp_path / "blobs"),
    )


def ended(factory: sessionmaker[Session], job_id: str, days_ago: float) -> None:
    """The job ran and succeeded `days_ago` days ago, leaving its files."""
    with session_scope(factory) as session:
        assert claim_job(session, job_id, lease_seconds=60, max_attempts=3)
        assert finish_job(session, job_id, JobStatus.succeeded)
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(finished_at=utcnow() - timedelta(days=days_ago))
        )


def files(tmp_path: Path, job_id: str) -> list[Path]:
    return [
        path for path in (tmp_path / "blobs").rglob("*") if path.is_file() and job_id in str(path)
    ]


def give_files(context: WorkerContext, job_id: str) -> None:
    for key in (checkpoint_key(job_id), samples_key(job_id, 5), student_key(job_id)):
        context.blobs.put_bytes(key, b"x")


def test_jobs_past_the_retention_days_are_deleted_with_their_files(
    sessions: sessionmaker[Session],  # noqa: F811
    tmp_path: Path,
) -> None:
    context = context_for(sessions, tmp_path, retention_days=7)
    old, recent, queued = make_job(sessions), make_job(sessions), make_job(sessions)
    ended(sessions, old, days_ago=8)
    ended(sessions, recent, days_ago=6)
    for job_id in (old, recent, queued):
        give_files(context, job_id)

    assert tidy_once(context) == (0, [old])
    assert files(tmp_path, old) == []
    assert len(files(tmp_path, recent)) == 3 and len(files(tmp_path, queued)) == 3
    with sessions() as session:
        assert session.get(Job, old) is None
        assert session.get(Job, recent) is not None and session.get(Job, queued) is not None
        [record] = session.scalars(select(Deletion))
        assert (record.kind, record.object_id, record.reason) == ("job", old, "retention")
        assert record.key_id is None and record.blobs_deleted == 3
        assert record.completed_at is not None
    assert tidy_once(context) == (0, [])  # nothing more to do


def test_without_retention_days_finished_jobs_are_kept(
    sessions: sessionmaker[Session],  # noqa: F811
    tmp_path: Path,
) -> None:
    context = context_for(sessions, tmp_path)
    job_id = make_job(sessions)
    ended(sessions, job_id, days_ago=10_000)
    give_files(context, job_id)
    assert tidy_once(context) == (0, [])
    assert len(files(tmp_path, job_id)) == 3


def test_a_deletion_whose_worker_died_is_finished_by_the_reaper(
    sessions: sessionmaker[Session],  # noqa: F811
    tmp_path: Path,
) -> None:
    """DELETE of a running job waits for it to stop; its worker dies instead. The reaper requeues
    it (its lease lapsed), then its tidy pass cancels it and finishes the deletion."""
    context = context_for(sessions, tmp_path)
    job_id = make_job(sessions)
    with session_scope(sessions) as session:
        assert claim_job(session, job_id, lease_seconds=60, max_attempts=3)
        tenant = session.get(Job, job_id).tenant_id
    give_files(context, job_id)
    with sessions() as session:
        outcome = delete_job(session, context.blobs, job_id, tenant, None)
        assert not outcome.done and outcome.waiting_for == [job_id]
    assert tidy_once(context) == (0, [])  # it still runs: nothing to finish yet
    assert len(files(tmp_path, job_id)) == 3

    with session_scope(sessions) as session:  # the worker died: its lease lapses
        session.execute(
            update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(1))
        )
    enqueued: list[str] = []
    assert reap_once(context, enqueued.append) == [job_id]
    assert tidy_once(context) == (1, [])
    assert files(tmp_path, job_id) == []
    with sessions() as session:
        assert session.get(Job, job_id) is None
        assert session.scalar(select(Deletion.completed_at)) is not None


def test_a_checkpoint_is_dropped_at_the_end_unless_kept(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    for keep, left in ((True, True), (False, False)):
        store.put_bytes(checkpoint_key("job_1"), b"x")
        store.put_bytes(student_key("job_1"), b"x")
        drop_checkpoint(store, Settings(data_dir=tmp_path, keep_checkpoints=keep), "job_1")
        assert store.exists(checkpoint_key("job_1")) is left
        assert store.exists(student_key("job_1"))


def test_cancel_of_a_queued_job_then_delete_is_immediate(
    sessions: sessionmaker[Session],  # noqa: F811
    tmp_path: Path,
) -> None:
    context = context_for(sessions, tmp_path)
    job_id = make_job(sessions)
    with session_scope(sessions) as session:
        request_cancel(session, job_id)
        tenant = session.get(Job, job_id).tenant_id
    with sessions() as session:
        assert delete_job(session, context.blobs, job_id, tenant, "key_1").done
        assert session.get(Job, job_id) is None


def test_a_delete_racing_another_finds_the_job_gone_and_is_done(
    sessions: sessionmaker[Session],  # noqa: F811
    tmp_path: Path,
) -> None:
    """Two DELETEs passed their 404 check together: the second finds no row and is done, not
    left pending for a job that will never stop."""
    context = context_for(sessions, tmp_path)
    job_id = make_job(sessions)
    ended(sessions, job_id, days_ago=0)
    with sessions() as first, sessions() as second:
        tenant = second.get(Job, job_id).tenant_id  # loaded before the first deletes it
        assert delete_job(first, context.blobs, job_id, tenant, None).done
        late = delete_job(second, context.blobs, job_id, tenant, None)
        assert late.done and late.waiting_for == []
    assert tidy_once(context) == (0, [])
