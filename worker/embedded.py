"""The embedded default's runner: threads in the API process that claim queued jobs."""

from __future__ import annotations

import logging
import threading

from service.db import session_scope
from service.job_state import next_queued_job, requeue_orphans
from worker.context import WorkerContext
from worker.job import run_job

log = logging.getLogger(__name__)


class EmbeddedRunner:
    poll_seconds = 2.0

    def __init__(self, context: WorkerContext, wakeup: threading.Event, threads: int = 1) -> None:
        self.context = context
        self.wakeup = wakeup
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, name=f"dfkd-runner-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> None:
        with session_scope(self.context.sessions) as session:
            orphans = requeue_orphans(session)
        if orphans:
            log.warning("requeued %d job(s) left running by an earlier process", len(orphans))
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self.wakeup.set()
        for thread in self._threads:
            thread.join(timeout)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                with session_scope(self.context.sessions) as session:
                    job_id = next_queued_job(session)
                if job_id is not None:
                    run_job(job_id, self.context)
                    continue
            except Exception:
                log.exception("embedded runner: unexpected error; retrying")
            self.wakeup.wait(self.poll_seconds)
            self.wakeup.clear()
