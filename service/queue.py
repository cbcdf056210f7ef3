"""The job-queue seam: the API hands a job id over by name and never imports the worker."""

from __future__ import annotations

import threading
from typing import Any, Protocol

from service.settings import Settings

RUN_JOB_TASK = "dfkd.run_job"


class QueueUnavailableError(RuntimeError):
    pass


class JobQueue(Protocol):
    def enqueue(self, job_id: str) -> None: ...

    def check(self) -> None:
        """Raise QueueUnavailableError when jobs cannot be handed over."""

    def depth(self) -> int | None:
        """Messages waiting in the broker, or None where the database's queued count is the depth."""


class InProcessJobQueue:
    """The embedded default: runner processes claim queued jobs from the database; this wakes
    them. `wakeup` is any event with `set()`: a multiprocessing one shared with the runners, or
    (no runner, as in tests that run jobs by hand) a thread event."""

    def __init__(self, wakeup: Any = None) -> None:
        self.wakeup = wakeup if wakeup is not None else threading.Event()

    def enqueue(self, job_id: str) -> None:
        self.wakeup.set()

    def check(self) -> None:
        return None

    def depth(self) -> int | None:
        return None


class CeleryJobQueue:
    def __init__(self, settings: Settings) -> None:
        from service.celery_app import make_celery

        self.app = make_celery(settings)
        self.queue = settings.celery_queue

    def enqueue(self, job_id: str) -> None:
        try:
            self.app.send_task(RUN_JOB_TASK, args=[job_id], queue=self.queue)
        except Exception as error:
            raise QueueUnavailableError(f"broker unreachable: {error}") from error

    def depth(self) -> int | None:
        try:
            with self.app.connection_for_read() as connection:
                return connection.default_channel.client.llen(self.queue)
        except Exception:
            return None

    def check(self) -> None:
        try:
            with self.app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
        except Exception as error:
            raise QueueUnavailableError(f"broker unreachable: {error}") from error


def make_job_queue(settings: Settings) -> JobQueue:
    return InProcessJobQueue() if settings.uses_embedded_runner else CeleryJobQueue(settings)
