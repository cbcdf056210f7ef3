"""The Celery side: one task that hands the job id to the job function, and the lease reaper."""

from __future__ import annotations

import os
from typing import Any

from celery.signals import worker_ready, worker_shutting_down

from service.celery_app import make_celery
from service.queue import RUN_JOB_TASK
from service.settings import get_settings
from worker.context import make_context, process_context
from worker.job import run_job
from worker.reaper import LeaseReaper

app = make_celery(get_settings())
_reaper: list[LeaseReaper] = []


@app.task(name=RUN_JOB_TASK)
def run_job_task(job_id: str) -> None:
    run_job(job_id, process_context())


def _enqueue(job_id: str) -> None:
    app.send_task(RUN_JOB_TASK, args=[job_id], queue=get_settings().celery_queue)


@worker_ready.connect
def _start_reaper(**_: Any) -> None:
    """In the worker's main process, which outlives its one-job children; its own engine, let
    go (not closed) in every forked child so no connection is shared across a fork."""
    settings = get_settings()
    context = make_context(settings)
    engine = context.sessions.kw["bind"]
    os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
    reaper = LeaseReaper(context, _enqueue, settings.lease_renew_interval)
    reaper.start()
    _reaper.append(reaper)


@worker_shutting_down.connect
def _stop_reaper(**_: Any) -> None:
    for reaper in _reaper:
        reaper.stop()
