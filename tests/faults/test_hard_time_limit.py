"""Past the hard time limit Celery kills the job's process; the reaper then fails the job with
`time_limit` instead of handing it to another worker."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.deployment import Deployment, elapsed

# finite but generous: a loaded 2-core machine also trains the session's teacher first
pytestmark = pytest.mark.timeout(1200)


def test_a_job_past_its_hard_time_limit_is_killed_and_fails_with_time_limit(
    deployment: Deployment, teacher_file: Path
) -> None:
    teacher_id = deployment.upload_teacher(teacher_file)
    deployment.extra_env["DFKD_JOB_HARD_TIME_LIMIT_SECONDS"] = "12"
    deployment.start_worker()
    job_id = deployment.submit(teacher_id, iterations=100_000, checkpoint_every=10)
    deployment.wait_for_step(job_id, 1)
    started = time.monotonic()

    final = deployment.wait_for_end(job_id, timeout=180)
    print(f"FIGURE hard_time_limit: job {final['status']} {elapsed(started)}s after its first step")
    assert final["status"] == "failed", final
    assert final["error"]["code"] == "time_limit", final["error"]
    assert "past the hard time limit of 12s" in final["error"]["message"]
    assert final["attempts"] == 1  # not handed to another worker
    assert final["progress"]["iteration"] < 100_000
    assert "TimeLimitExceeded" in deployment.worker_logs() or "Hard time limit" in (
        deployment.worker_logs()
    )
