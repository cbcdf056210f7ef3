"""The same Celery message delivered twice, to two worker processes at once: one claims the job,
the other finds nothing to claim; one execution, one set of metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.celery_app import make_celery
from service.queue import RUN_JOB_TASK
from service.settings import Settings
from tests.faults.deployment import JOB, Deployment, expected_steps

# finite but generous: a loaded 2-core machine also trains the session's teacher first
pytestmark = pytest.mark.timeout(1200)


def test_a_job_sent_twice_runs_once_with_one_set_of_metrics(
    deployment: Deployment, teacher_file: Path
) -> None:
    teacher_id = deployment.upload_teacher(teacher_file)
    deployment.start_worker(concurrency=2)  # two processes, each free to take one message
    job_id = deployment.submit(teacher_id)  # the first message
    settings = Settings(
        broker_url=deployment.redis.url, celery_queue=deployment.env["DFKD_CELERY_QUEUE"]
    )
    make_celery(settings).send_task(RUN_JOB_TASK, args=[job_id], queue=settings.celery_queue)

    final = deployment.wait_for_end(job_id, timeout=240)
    assert final["status"] == "succeeded", final
    assert final["attempts"] == 1
    logs = deployment.worker_logs()
    assert logs.count(f"Task {RUN_JOB_TASK}[") >= 2 or logs.count("received") >= 2, logs[-3000:]
    assert f"job {job_id}: nothing to claim" in logs
    messages = [event["message"] for event in deployment.events(job_id)]
    assert sum(message.startswith("running (attempt") for message in messages) == 1, messages
    steps = expected_steps(JOB["iterations"], JOB["hyperparameters"]["log_every"])
    assert deployment.metric_steps(job_id) == steps
