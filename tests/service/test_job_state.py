"""Every status change is one conditional UPDATE: a second delivery finds nothing to claim, a
cancel or a failure meets the job as it is at that moment, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from service.db import make_engine, make_session_factory, session_scope
from service.job_state import (
    CancelOutcome,
    claim_job,
    fail_out_of_attempts,
    fail_unqueued,
    finish_job,
    request_cancel,
    requeue_orphans,
)
from service.migrate import upgrade_to_head
from service.models import Job, JobEvent, JobStatus, Teacher, utcnow


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = (
        f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    upgrade_to_head(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


def make_job(sessions: sessionmaker[Session]) -> str:
    with session_scope(sessions) as session:
        teacher = Teacher(
            name="t",
            format="safetensors",
            architecture="lenet5",
            architecture_kwargs={},
            input_shape=[1, 32, 32],
            num_classes=10,
            input_mean=None,
            input_std=None,
            blob_key="k",
            sha256="0" * 64,
            size_bytes=1,
            parameter_count=1,
        )
        session.add(teacher)
        session.flush()
        job = Job(
            teacher_id=teacher.id,
            method="zskt",
            student_architecture="lenet5_half",
            student_kwargs={},
            iterations=1,
            batch_size=2,
            seed=0,
            hyperparameters={},
            job_metadata={},
            latest_metrics={},
        )
        session.add(job)
        session.flush()
        return job.id


def test_only_one_of_many_concurrent_claims_wins(sessions: sessionmaker[Session]) -> None:
    job_id = make_job(sessions)
    results: list[bool] = []
    barrier = threading.Barrier(6)

    def claim() -> None:
        barrier.wait()
        with session_scope(sessions) as session:
            results.append(claim_job(session, job_id, lease_seconds=60, max_attempts=3))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 5 + [True]
    with session_scope(sessions) as session:
        job = session.get(Job, job_id)
        assert job.status == JobStatus.running and job.attempts == 1


def test_expired_lease_can_be_claimed_again_until_attempts_run_out(
    sessions: sessionmaker[Session],
) -> None:
    job_id = make_job(sessions)
    for attempt in (1, 2):
        with session_scope(sessions) as session:
            assert claim_job(session, job_id, lease_seconds=60, max_attempts=2)
            assert not claim_job(
                session, job_id, lease_seconds=60, max_attempts=2
            )  # lease still held
            session.get(Job, job_id).lease_expires_at = utcnow() - timedelta(seconds=1)
        with session_scope(sessions) as session:
            assert session.get(Job, job_id).attempts == attempt
    with session_scope(sessions) as session:
        assert not claim_job(session, job_id, lease_seconds=60, max_attempts=2)


def test_orphans_of_a_dead_process_are_requeued(sessions: sessionmaker[Session]) -> None:
    job_id = make_job(sessions)
    with session_scope(sessions) as session:
        claim_job(session, job_id, lease_seconds=60, max_attempts=3)
    with session_scope(sessions) as session:
        assert requeue_orphans(session) == [job_id]
    with session_scope(sessions) as session:
        assert session.get(Job, job_id).status == JobStatus.queued


def events(sessions: sessionmaker[Session], job_id: str) -> list[tuple[str, str]]:
    with session_scope(sessions) as session:
        rows = session.query(JobEvent).filter_by(job_id=job_id).order_by(JobEvent.id)
        return [(event.kind, event.message) for event in rows]


def test_cancelling_a_queued_job_ends_it(sessions: sessionmaker[Session]) -> None:
    job_id = make_job(sessions)
    with session_scope(sessions) as session:
        assert request_cancel(session, job_id) == CancelOutcome.cancelled
    with session_scope(sessions) as session:
        job = session.get(Job, job_id)
        assert job.status == JobStatus.cancelled and job.finished_at is not None
        assert not job.cancel_requested
        # a cancelled job can no longer be claimed
        assert not claim_job(session, job_id, lease_seconds=60, max_attempts=3)
    assert events(sessions, job_id) == [("state", "cancelled before it started")]


def test_cancelling_a_running_job_raises_its_flag_and_leaves_it_running(
    sessions: sessionmaker[Session],
) -> None:
    job_id = make_job(sessions)
    with session_scope(sessions) as session:
        claim_job(session, job_id, lease_seconds=60, max_attempts=3)
    with session_scope(sessions) as session:
        assert request_cancel(session, job_id) == CancelOutcome.requested
    with session_scope(sessions) as session:
        job = session.get(Job, job_id)
        assert job.status == JobStatus.running and job.cancel_requested
        assert job.finished_at is None
    assert events(sessions, job_id)[-1][0] == "info"


def test_cancelling_an_ended_job_changes_nothing(sessions: sessionmaker[Session]) -> None:
    job_id = make_job(sessions)
    with session_scope(sessions) as session:
        claim_job(session, job_id, lease_seconds=60, max_attempts=3)
        assert finish_job(session, job_id, JobStatus.succeeded)
    with session_scope(sessions) as session:
        assert request_cancel(session, job_id) == CancelOutcome.already_ended
        assert request_cancel(session, "job_missing") == CancelOutcome.already_ended
    with session_scope(sessions) as session:
        job = session.get(Job, job_id)
        assert job.status == JobStatus.succeeded and not job.cancel_requested
    assert events(sessions, job_id) == []


def test_a_job_that_ends_after_the_callers_read_is_not_cancelled(
    sessions: sessionmaker[Session],
) -> None:
    job_id = make_job(sessions)
    with session_scope(sessions) as reader:
        seen = reader.get(Job, job_id)
        assert seen.status == JobStatus.queued  # what the API read ...
        with session_scope(sessions) as worker:  # ... before a worker ran the job to its end
            claim_job(worker, job_id, lease_seconds=60, max_attempts=3)
            finish_job(worker, job_id, JobStatus.succeeded)
        assert request_cancel(reader, job_id) == CancelOutcome.already_ended
    with session_scope(sessions) as session:
        assert session.get(Job, job_id).status == JobStatus.succeeded


def test_a_job_the_broker_never_got_fails_with_the_given_code(
    sessions: sessionmaker[Session],
) -> None:
    job_id = make_job(sessions)
    with session_scope(sessions) as session:
        assert fail_unqueued(session, job_id, "broker_unavailable", "the broker is down")
    with session_scope(sessions) as session:
        job = session.get(Job, job_id)
        assert job.status == JobStatus.failed and job.error_code == "broker_unavailable"
        assert job.error_message == "the broker is down" and job.finished_at is not None
    assert events(sessions, job_id) == [("error", "the broker is down")]


def test_a_job_that_left_the_queue_is_not_failed_as_unqueued(
    sessions: sessionmaker[Session],
) -> None:
    job_id = make_job(sessions)
    with session_scope(sessions) as session:
        claim_job(session, job_id, lease_seconds=60, max_attempts=3)
    with session_scope(sessions) as session:
        assert not fail_unqueued(session, job_id, "broker_unavailable", "the broker is down")
    with session_scope(sessions) as session:
        job = session.get(Job, job_id)
        assert job.status == JobStatus.running and job.error_code is None


def lapse(sessions: sessionmaker[Session], job_id: str) -> None:
    with session_scope(sessions) as session:
        session.get(Job, job_id).lease_expires_at = utcnow() - timedelta(seconds=1)


def test_a_delivery_after_the_last_attempt_lapsed_fails_the_job_as_the_reaper_would(
    sessions: sessionmaker[Session],
) -> None:
    job_id = make_job(sessions)
    with session_scope(sessions) as session:
        assert claim_job(session, job_id, lease_seconds=60, max_attempts=1)
    with session_scope(sessions) as session:
        assert not fail_out_of_attempts(session, job_id, max_attempts=1)  # its lease holds
    lapse(sessions, job_id)
    with session_scope(sessions) as session:
        assert not fail_out_of_attempts(session, job_id, max_attempts=2)  # an attempt is left
        assert fail_out_of_attempts(session, job_id, max_attempts=1)
        assert not fail_out_of_attempts(session, job_id, max_attempts=1)  # once only
    with session_scope(sessions) as session:
        job = session.get(Job, job_id)
        assert job.status == JobStatus.failed and job.error_code == "too_many_attempts"
        assert "1 times" in job.error_message and job.finished_at is not None
        assert job.lease_expires_at is None
    assert [kind for kind, _ in events(sessions, job_id)] == ["error"]
