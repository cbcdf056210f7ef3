"""The lease heartbeat is a thread of its own: a training loop stalled well past its lease (a
long step in Python, a checkpoint write that hangs) keeps the job, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from sqlalchemy.orm import Session, sessionmaker

from service.blobstore import LocalBlobStore
from service.db import session_scope
from service.job_state import claim_job
from service.models import Job, JobStatus, utcnow
from service.settings import Settings
from tests.service.test_job_state import make_job, sessions  # noqa: F401 (the fixture)
from worker.context import WorkerContext
from worker.lease import LeaseKeeper
from worker.reaper import reap_once

LEASE_SECONDS = 2.0


def claimed_job(factory: sessionmaker[Session], tmp_path: Path) -> tuple[WorkerContext, str]:
    settings = Settings(data_dir=tmp_path, job_lease_seconds=LEASE_SECONDS)
    context = WorkerContext(settings=settings, sessions=factory, blobs=LocalBlobStore(tmp_path))
    job_id = make_job(factory)
    with session_scope(factory) as session:
        assert claim_job(session, job_id, LEASE_SECONDS, max_attempts=3)
    return context, job_id


def stall(seconds: float) -> None:
    """What a slow step does to the loop's thread: Python holding the GIL, then a torch op."""
    deadline = time.monotonic() + seconds / 2
    while time.monotonic() < deadline:
        sum(range(10_000))
    deadline = time.monotonic() + seconds / 2
    a = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))
    while time.monotonic() < deadline:
        a = torch.tanh(a @ a)


def still_ours(context: WorkerContext, job_id: str) -> bool:
    requeued = reap_once(context, lambda _: None)
    with session_scope(context.sessions) as session:
        job = session.get(Job, job_id)
        expires = job.lease_expires_at
        if expires is None:  # requeued: the lease is gone
            return False
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=utcnow().tzinfo)  # SQLite hands back naive UTC
        return job.status == JobStatus.running and expires > utcnow() and job_id not in requeued


def test_a_stalled_loop_keeps_its_lease_while_the_heartbeat_runs(
    sessions: sessionmaker[Session],  # noqa: F811
    tmp_path: Path,
) -> None:
    context, job_id = claimed_job(sessions, tmp_path)
    assert context.settings.lease_renew_interval == LEASE_SECONDS / 6  # the default ratio
    with LeaseKeeper(context, job_id, attempt=1) as keeper:
        stall(3 * LEASE_SECONDS)
        assert still_ours(context, job_id)
        assert not keeper.lost.is_set()


def test_without_the_heartbeat_the_same_stall_loses_the_job(
    sessions: sessionmaker[Session],  # noqa: F811
    tmp_path: Path,
) -> None:
    context, job_id = claimed_job(sessions, tmp_path)
    stall(3 * LEASE_SECONDS)
    assert not still_ours(context, job_id)
