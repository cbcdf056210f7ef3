"""Celery configured for long GPU jobs; the API uses it to send, workers to consume."""

from __future__ import annotations

from celery import Celery

from service.settings import Settings


def make_celery(settings: Settings) -> Celery:
    app = Celery("dfkd", broker=settings.broker_url)
    # Redis redelivers an unacked message after this; it must outlast the longest job or a
    # running job would be handed to a second worker.
    visibility_timeout = settings.job_soft_time_limit_seconds + 3600
    app.conf.update(
        # Ack only after the job function returns, so a worker that dies mid-job loses nothing.
        task_acks_late=True,
        # A worker process killed by the OS (OOM, kill -9) puts the message back.
        task_reject_on_worker_lost=True,
        # One job at a time per process: a prefetched second job would wait behind hours of work.
        worker_prefetch_multiplier=1,
        # A fresh process per job: CUDA state and leaked memory never outlive a job.
        worker_max_tasks_per_child=1,
        broker_transport_options={"visibility_timeout": visibility_timeout},
        result_backend_transport_options={"visibility_timeout": visibility_timeout},
        visibility_timeout=visibility_timeout,
        # State lives in the database; Celery only carries "run job X".
        task_ignore_result=True,
        task_soft_time_limit=settings.job_soft_time_limit_seconds,
        task_time_limit=settings.job_soft_time_limit_seconds + 600,
        task_default_queue=settings.celery_queue,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app
