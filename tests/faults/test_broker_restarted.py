"""Redis restarted mid-job (a private redis-server, its queue lost with it): the running job
finishes, and the worker reconnects and takes the next job."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.deployment import JOB, Deployment, elapsed, expected_steps

# finite but generous: a loaded 2-core machine also trains the session's teacher first
pytestmark = pytest.mark.timeout(1200)


def test_a_redis_restart_mid_job_leaves_the_job_succeeded_and_the_worker_consuming(
    deployment: Deployment, teacher_file: Path
) -> None:
    teacher_id = deployment.upload_teacher(teacher_file)
    deployment.start_worker()
    job_id = deployment.submit(teacher_id)
    deployment.wait_for_step(job_id, 5)
    started = time.monotonic()
    deployment.redis.stop()
    time.sleep(3)
    deployment.redis.start()  # same port, empty: the running job's unacked message is gone

    final = deployment.wait_for_end(job_id, timeout=240)
    print(f"FIGURE broker_restarted: job {final['status']} {elapsed(started)}s after the restart")
    assert final["status"] == "succeeded", final
    assert final["attempts"] == 1
    steps = expected_steps(JOB["iterations"], JOB["hyperparameters"]["log_every"])
    assert deployment.metric_steps(job_id) == steps

    # the worker found the new Redis: a job submitted after the restart runs too
    after = deployment.submit(teacher_id, iterations=10, checkpoint_every=10)
    assert deployment.wait_for_end(after, timeout=180)["status"] == "succeeded"
