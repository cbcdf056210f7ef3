"""The lease reaper: jobs whose worker died (kill -9, power loss) go back to the queue.

A Celery message of a worker killed outright stays unacked until Redis's visibility timeout
(longer than the longest job, so hours or days); the database lease lapses within minutes, and
this loop puts the job back to queued and sends a new message for it. Every `dfkd worker` runs
one; any number may run at once (each job moves in one conditional UPDATE, and claiming is
exactly-once anyway). The same loop finishes deletions left pending and applies retention
(`tidy_once`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from service.db import session_scope
from service.deletion import finish_pending
from service.job_state import lapsed_leases, reap_lapsed
from service.models import JobStatus
from service.retention import drop_checkpoint, expire_jobs
from service.webhooks import deliver_job_webhook
from worker.context import WorkerContext

log = logging.getLogger(__name__)


def reap_once(context: WorkerContext, enqueue: Callable[[str], None]) -> list[str]:
    """One pass; returns the ids it requeued or failed.

    The message goes out inside the transaction that requeues the job: if sending fails the
    job stays lapsed and the next pass retries; if the commit fails after sending, the message
    still claims the job (a lapsed running job is claimable)."""
    with session_scope(context.sessions) as session:
        lapsed = lapsed_leases(session)
    moved: list[str] = []
    settings = context.settings
    for job_id, attempts, started_at in lapsed:
        with session_scope(context.sessions) as session:
            status = reap_lapsed(
                session,
                job_id,
                attempts,
                settings.max_attempts,
                started_at=started_at,
                hard_limit_seconds=settings.hard_time_limit,
            )
            if status == JobStatus.queued:
                enqueue(job_id)
        if status is None:
            continue
        moved.append(job_id)
        log.warning("job %s: lease lapsed after attempt %d; now %s", job_id, attempts, status)
        if status == JobStatus.failed:
            drop_checkpoint(context.blobs, settings, job_id)
            deliver_job_webhook(context.sessions, settings, job_id)
    return moved


def tidy_once(context: WorkerContext) -> tuple[int, list[str]]:
    """Finishes the deletions left pending (a job that stopped without its worker finishing
    them, blobs the store refused) and deletes the jobs past DFKD_RETENTION_DAYS. Returns how
    many deletions finished and the ids of the expired jobs."""
    with context.sessions() as session:
        finished = finish_pending(session, context.blobs)
        expired = expire_jobs(session, context.blobs, context.settings)
    return finished, expired


class LeaseReaper:
    """A daemon thread that runs `reap_once` every `interval` seconds until stopped."""

    def __init__(
        self, context: WorkerContext, enqueue: Callable[[str], None], interval: float
    ) -> None:
        self.context = context
        self.enqueue = enqueue
        self.interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dfkd-lease-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                reap_once(self.context, self.enqueue)
            except Exception:  # the database or broker is away; the next pass retries
                log.exception("lease reaper: pass failed; retrying in %.0fs", self.interval)
            try:
                tidy_once(self.context)
            except Exception:  # the database or storage is away; the next pass retries
                log.exception(
                    "deletions and retention: pass failed; retrying in %.0fs", self.interval
                )
