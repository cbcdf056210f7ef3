"""The embedded default's runner: child processes of the API process that claim queued jobs.

Why processes and not threads in the API process: a job in a thread shares the API's GIL (polls
wait behind the training loop), and a second OpenMP team in the process (the API's upload checks
run torch in its request threads) throttles libgomp's spin-waiting, so the job's intra-op threads
sleep and wake on a futex at every parallel region: 15-20% slower than the same loop alone
(bench/service_overhead.py). A child process has one team, its own GIL and its own priority; when
it dies (out of memory, a crash in native code) the API stays up, its job goes back to the queue at
once (or fails, past the hard time limit or its attempts) and a new child takes its place.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import Synchronized, SynchronizedString
from typing import Any

from service.db import session_scope
from service.job_state import lapse_lease, next_queued_job, requeue_orphans
from service.settings import Settings
from worker.context import make_context
from worker.reaper import LeaseReaper, reap_once

log = logging.getLogger(__name__)

SPAWN = multiprocessing.get_context("spawn")  # no fork: the API process has threads and maybe CUDA
JOB_ID_BYTES = 64


def new_wakeup() -> Any:
    """The event the API sets when it queues a job; runner processes wait on it."""
    return SPAWN.Event()


@dataclass
class _Runner:
    process: BaseProcess
    job_id: SynchronizedString  # the job it runs now, b"" when idle
    since: Synchronized  # time.time() when that job started


class EmbeddedRunner:
    """Starts `processes` runner processes, restarts any that dies, kills one whose job runs past
    the hard time limit, and reaps lapsed leases. A dead runner's job is returned at once (its
    lease ended by hand, then one reaper pass) instead of when its lease lapses.

    Runners run at nice +DFKD_RUNNER_NICE: a job gets every idle core, and the API's requests come
    first."""

    poll_seconds = 2.0  # a runner looks for queued jobs this often even without a wakeup
    monitor_seconds = 1.0

    def __init__(self, settings: Settings, wakeup: Any, processes: int = 1) -> None:
        self.settings = settings
        self.wakeup = wakeup
        self.processes = processes
        self._stopping = SPAWN.Event()
        self._runners: list[_Runner] = []
        self._context = make_context(settings)
        self._reaper = LeaseReaper(self._context, self._wake_runners, settings.lease_renew_interval)
        self._monitor = threading.Thread(
            target=self._watch, name="dfkd-runner-monitor", daemon=True
        )

    def start(self) -> None:
        with session_scope(self._context.sessions) as session:
            orphans = requeue_orphans(session)
        if orphans:
            log.warning("requeued %d job(s) left running by an earlier process", len(orphans))
        self._runners = [self._spawn(index) for index in range(self.processes)]
        self._reaper.start()
        self._monitor.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Idle runners exit; one still in a job is killed after `timeout` (its job is requeued at
        the next start and resumes from its last checkpoint)."""
        self._stopping.set()
        self.wakeup.set()
        self._monitor.join(timeout)
        deadline = time.monotonic() + timeout
        for runner in self._runners:
            runner.process.join(max(0.0, deadline - time.monotonic()))
            if runner.process.is_alive():
                runner.process.kill()
                runner.process.join(timeout)
        self._reaper.stop()

    @property
    def pids(self) -> list[int | None]:
        return [runner.process.pid for runner in self._runners]

    def _spawn(self, index: int) -> _Runner:
        job_id = SPAWN.Array("c", JOB_ID_BYTES)
        since = SPAWN.Value("d", 0.0)
        process = SPAWN.Process(
            target=run_runner_process,
            args=(self.settings, self.wakeup, self._stopping, job_id, since, os.getpid()),
            kwargs={"nice": self.settings.runner_nice, "poll_seconds": self.poll_seconds},
            name=f"dfkd-runner-{index}",
            daemon=True,
        )
        process.start()
        log.info("embedded runner %d started (pid %s)", index, process.pid)
        return _Runner(process, job_id, since)

    def _watch(self) -> None:
        while not self._stopping.wait(self.monitor_seconds):
            for index, runner in enumerate(self._runners):
                try:
                    self._check(index, runner)
                except Exception:
                    log.exception("embedded runner monitor: check of runner %d failed", index)

    def _check(self, index: int, runner: _Runner) -> None:
        job_id = runner.job_id.value.decode()
        if not runner.process.is_alive():
            if self._stopping.is_set():
                return
            log.error(
                "embedded runner %d (pid %s) exited with code %s%s; starting another",
                index,
                runner.process.pid,
                runner.process.exitcode,
                f" while running job {job_id}" if job_id else "",
            )
            self._runners[index] = self._spawn(index)
            if job_id:
                self._return_job(job_id)
            return
        ran = time.time() - runner.since.value
        if job_id and ran > self.settings.hard_time_limit:
            log.error(
                "job %s ran %.0fs, past the hard time limit of %.0fs: killing its runner",
                job_id,
                ran,
                self.settings.hard_time_limit,
            )
            runner.process.kill()  # the next check returns its job: it fails with time_limit

    def _wake_runners(self, _job_id: str) -> None:
        self.wakeup.set()

    def _return_job(self, job_id: str) -> None:
        """The job of a runner that died: end its lease and reap it now (requeued, or failed with
        time_limit / too_many_attempts), rather than after up to DFKD_JOB_LEASE_SECONDS."""
        with session_scope(self._context.sessions) as session:
            lapsed = lapse_lease(session, job_id)
        if lapsed:
            reap_once(self._context, self._wake_runners)


def run_runner_process(
    settings: Settings,
    wakeup: Any,
    stopping: Any,
    job_slot: SynchronizedString,
    since: Synchronized,
    parent_pid: int,
    *,
    nice: int,
    poll_seconds: float,
) -> None:
    """A runner process's main: claim queued jobs and run them, one at a time, until told to stop
    or the API process is gone."""
    from service.logs import configure_logging
    from worker.job import run_job

    configure_logging(settings.log_format)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the API stops us
    _exit_with_parent(parent_pid)
    _lower_priority(nice)
    context = make_context(settings)
    while not stopping.is_set():
        try:
            with session_scope(context.sessions) as session:
                job_id = next_queued_job(session)
            if job_id is not None:
                since.value = time.time()
                job_slot.value = job_id.encode()[:JOB_ID_BYTES]
                try:
                    run_job(job_id, context)
                finally:
                    job_slot.value = b""
                continue
        except Exception:
            log.exception("embedded runner: unexpected error; retrying")
        wakeup.wait(poll_seconds)
        wakeup.clear()


def _exit_with_parent(parent_pid: int) -> None:
    """Die with the API process, even when it is killed outright: the kernel's parent-death signal
    where there is one (Linux), and a watchdog thread everywhere."""
    if sys.platform.startswith("linux"):
        try:
            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="dfkd-parent-watch", daemon=True).start()


def _lower_priority(nice: int) -> None:
    try:
        os.nice(nice)
    except (AttributeError, OSError) as error:  # not Unix, or not allowed
        log.warning("embedded runner: could not lower its priority (%s)", error)
