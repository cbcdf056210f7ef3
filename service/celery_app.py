"""Celery configured for long GPU jobs; the API uses it to send, workers to consume."""

from __future__ import annotations

from celery import Celery

from service.settings import Settings


def make_celery(settings: Settings) -> Celery:
    app = Celery("dfkd", broker=settings.broker_url)
    # Redis redelivers an unacked message after this; it must outlast the longest job or a
    # running job would be handed to a second worker. (A killed worker's job comes back sooner,
    # through the lease reaper, not through this.)
    visibility_timeout = settings.hard_time_limit + 3600
    app.conf.update(
        # Ack only after the job function returns, so a worker that dies mid-job loses nothing.
        task_acks_late=True,
        # A worker process killed by the OS (OOM, kill -9) puts the message back.
        task_reject_on_worker_lost=True,
        # One job at a time per process: a prefetched second job would wait behind hours of work.
        worker_prefetch_multiplier=1,
        # A fresh process per job: CUDA state and leaked memory never outlive a job.
        worker_max_tasks_per_child=1,
        # The visibility timeout, in every place Celery and kombu read it.
        broker_transport_options={"visibility_timeout": visibility_timeout},
        result_backend_transport_options={"visibility_timeout": visibility_timeout},
        visibility_timeout=visibility_timeout,
        # State lives in the database; Celery only carries "run job X".
        task_ignore_result=True,
        # Hard limit: the pool kills a job's process that runs past it (the reaper then fails the
        # job with time_limit). No Celery soft limit: its exception would land at any line of the
        # loop; the job's own soft limit stops it cleanly at a checkpoint (worker/hooks.py).
        task_time_limit=settings.hard_time_limit,
        # A broker restart must not kill running jobs: their state is in the database, not Redis.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # One queue name for sender and workers (routing by GPU class means one queue per class).
        task_default_queue=settings.celery_queue,
        # A worker started before Redis waits for it instead of exiting.
        broker_connection_retry_on_startup=True,
        # Our JSON logs (with job ids) stay in charge of the root logger.
        worker_hijack_root_logger=False,
    )
    return app
