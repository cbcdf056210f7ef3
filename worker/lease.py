"""A running job's heartbeat: renews its lease on a clock, whatever the training loop is doing."""

from __future__ import annotations

import logging
import threading

from service.db_retry import in_transaction
from service.job_state import renew_lease
from worker.context import WorkerContext

log = logging.getLogger(__name__)


class LeaseLostError(RuntimeError):
    """The job's lease lapsed and it went to another worker; this one must stop quietly."""


class LeaseKeeper:
    """Renews the lease every `lease_renew_interval` seconds from its own thread, so a long step
    (or a long checkpoint write) never lets a live job look dead. A renewal that finds the job
    no longer ours sets `lost`; the loop's next check stops the job."""

    def __init__(self, context: WorkerContext, job_id: str, attempt: int) -> None:
        self.context = context
        self.job_id = job_id
        self.attempt = attempt
        self.lost = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"dfkd-lease-{job_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        self._thread.join(10)

    def renew(self) -> None:
        settings = self.context.settings
        ours = in_transaction(
            self.context.sessions,
            lambda session: renew_lease(
                session, self.job_id, settings.job_lease_seconds, attempt=self.attempt
            ),
        )
        if not ours:
            self.lost.set()

    def _loop(self) -> None:
        while not self._stopping.wait(self.context.settings.lease_renew_interval):
            try:
                self.renew()
            except Exception:  # the next beat retries; the lease outlasts a few missed ones
                log.exception("job %s: lease renewal failed", self.job_id)
            if self.lost.is_set():
                log.warning("job %s: lease lost to another attempt; stopping", self.job_id)
                return
