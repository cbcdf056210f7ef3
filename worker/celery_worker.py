"""The Celery side: one task that hands the job id to the job function."""

from __future__ import annotations

from service.celery_app import make_celery
from service.queue import RUN_JOB_TASK
from service.settings import get_settings
from worker.context import process_context
from worker.job import run_job

app = make_celery(get_settings())


@app.task(name=RUN_JOB_TASK)
def run_job_task(job_id: str) -> None:
    run_job(job_id, process_context())
