"""The embedded default's runner: threads in the API process that claim queued jobs."""

from __future__ import annotations

import logging
import os
import sys
import threading

from service.db import session_scope
from service.job_state import next_queued_job, requeue_orphans
from worker.context import WorkerContext
from worker.job import run_job

log = logging.getLogger(__name__)


class EmbeddedRunner:
    """Jobs share the API's process, so the API must come first: each runner thread lowers its own
    scheduling priority (Linux applies nice per thread; torch's intra-op threads, created by the
    runner thread, inherit it), and the interpreter hands the GIL over every millisecond instead of
    every 5 ms. The job still gets every idle core; a request no longer waits behind it
    (bench/polling.py)."""

    poll_seconds = 2.0
    nice = 10  # added to the runner threads' nice value
    switch_interval_seconds = 0.001

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
        sys.setswitchinterval(min(sys.getswitchinterval(), self.switch_interval_seconds))
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self.wakeup.set()
        for thread in self._threads:
            thread.join(timeout)

    def _lower_priority(self) -> None:
        try:
            thread = threading.get_native_id()
            os.setpriority(
                os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + self.nice
            )
        except (AttributeError, OSError) as error:  # not Linux, or not allowed
            log.warning("embedded runner: could not lower its priority (%s)", error)

    def _loop(self) -> None:
        self._lower_priority()
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
