"""Claiming is one conditional UPDATE: a second delivery finds nothing, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from service.db import make_engine, make_session_factory, session_scope
from service.job_state import claim_job, requeue_orphans
from service.migrate import upgrade_to_head
from service.models import Job, JobStatus, Teacher, utcnow


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
