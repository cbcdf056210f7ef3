"""The lease reaper on SQLite and PostgreSQL: lapsed jobs are requeued and re-enqueued exactly
once however many reapers race, and fail with `too_many_attempts` when their attempts are used."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope
from service.job_state import claim_job, finish_job, renew_lease
from service.models import Job, JobEvent, JobStatus, utcnow
from service.settings import Settings
from tests.service.test_job_state import make_job, sessions  # noqa: F401 (the fixture)
from worker.context import WorkerContext
from worker.reaper import reap_once


def context_for(factory: sessionmaker[Session], tmp_path: Path, max_attempts: int) -> WorkerContext:
    from service.blobstore import LocalBlobStore

    settings = Settings(data_dir=tmp_path, max_attempts=max_attempts)
    return WorkerContext(settings=settings, sessions=factory, blobs=LocalBlobStore(tmp_path))


def lapse(factory: sessionmaker[Session], job_id: str) -> None:
    with session_scope(factory) as session:
        session.get(Job, job_id).lease_expires_at = utcnow() - timedelta(seconds=1)


def test_a_lapsed_job_is_requeued_and_enqueued_once_by_racing_reapers(
    sessions: sessionmaker[Session],  # noqa: F811
    tmp_path: Path,
) -> None:
    job_id, live_id = make_job(sessions), make_job(sessions)
    with session_scope(sessions) as session:
        assert claim_job(session, job_id, lease_seconds=60, max_attempts=3)
        assert claim_job(session, live_id, lease_seconds=60, max_attempts=3)
    lapse(sessions, job_id)
    context = context_for(sessions, tmp_path, max_attempts=3)
    sent: list[str] = []
    barrier = threading.Barrier(4)

    def reap() -> None:
        barrier.wait()
        reap_once(context, sent.append)

    threads = [threading.Thread(target=reap) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sent == [job_id]  # the live job's lease still holds
    with session_scope(sessions) as session:
        job = session.get(Job, job_id)
        assert job.status == JobStatus.queued and job.lease_expires_at is None
        assert session.get(Job, live_id).status == JobStatus.running
        # the next attempt claims it; the dead attempt can neither renew nor finish it
        assert claim_job(session, job_id, lease_seconds=60, max_attempts=3)
        assert not renew_lease(session, job_id, 60, attempt=1)
        assert not finish_job(session, job_id, JobStatus.succeeded, attempt=1)
        assert renew_lease(session, job_id, 60, attempt=2)


def test_a_job_whose_last_attempt_lapsed_fails_with_too_many_attempts(
    sessions: sessionmaker[Session],  # noqa: F811
    tmp_path: Path,
) -> None:
    job_id = make_job(sessions)
    context = context_for(sessions, tmp_path, max_attempts=2)
    sent: list[str] = []
    for _ in range(2):
        with session_scope(sessions) as session:
            assert claim_job(session, job_id, lease_seconds=60, max_attempts=2)
        lapse(sessions, job_id)
        reap_once(context, sent.append)
    assert sent == [job_id]  # requeued after attempt 1 only
    with session_scope(sessions) as session:
        job = session.get(Job, job_id)
        assert job.status == JobStatus.failed and job.error_code == "too_many_attempts"
        assert "2 times" in job.error_message and job.finished_at is not None
        kinds = [e.kind for e in session.query(JobEvent).filter_by(job_id=job_id)]
        assert kinds.count("error") == 1


def test_a_failed_send_leaves_the_job_lapsed_for_the_next_pass(
    sessions: sessionmaker[Session],  # noqa: F811
    tmp_path: Path,
) -> None:
    job_id = make_job(sessions)
    with session_scope(sessions) as session:
        assert claim_job(session, job_id, lease_seconds=60, max_attempts=3)
    lapse(sessions, job_id)
    context = context_for(sessions, tmp_path, max_attempts=3)

    def broker_down(_: str) -> None:
        raise ConnectionError("broker unreachable")

    with pytest.raises(ConnectionError):
        reap_once(context, broker_down)
    with session_scope(sessions) as session:
        assert session.get(Job, job_id).status == JobStatus.running  # rolled back, not lost
    sent: list[str] = []
    reap_once(context, sent.append)
    assert sent == [job_id]
