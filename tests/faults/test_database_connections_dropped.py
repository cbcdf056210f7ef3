"""PostgreSQL drops the worker's connections mid-job (pg_terminate_backend, as in a failover or
an operator's kill): the worker reconnects, retries what it was writing, and loses nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.deployment import JOB, Deployment, elapsed, expected_steps

# finite but generous: a loaded 2-core machine also trains the session's teacher first
pytestmark = pytest.mark.timeout(1200)


def test_terminated_database_connections_cost_the_job_nothing(
    deployment: Deployment, teacher_file: Path
) -> None:
    teacher_id = deployment.upload_teacher(teacher_file)
    deployment.start_worker()
    job_id = deployment.submit(teacher_id)
    deployment.wait_for_step(job_id, 5)

    # for 8 s, every 0.2 s, every connection the worker holds: idle ones and ones mid-statement
    started, terminated = time.monotonic(), 0
    while time.monotonic() - started < 8:
        terminated += deployment.terminate_worker_connections()
        time.sleep(0.2)
    step_after = deployment.job(job_id)["progress"]["iteration"]
    final = deployment.wait_for_end(job_id, timeout=240)
    print(
        f"FIGURE database_dropped: {terminated} connections terminated over 8 s "
        f"(job at step {step_after}); ended {final['status']} {elapsed(started)}s after the first"
    )

    assert terminated >= 3
    assert final["status"] == "succeeded", final
    assert final["attempts"] == 1  # the lease was kept throughout: no second attempt
    steps = expected_steps(JOB["iterations"], JOB["hyperparameters"]["log_every"])
    assert deployment.metric_steps(job_id) == steps
    assert deployment.student(job_id).status_code == 200
