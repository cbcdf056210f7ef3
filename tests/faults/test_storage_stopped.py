"""The S3 endpoint goes away mid-job: the job fails with `storage_unavailable` and a message
that says what to do, and no half-written student is ever served."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from service.blob_keys import student_key
from tests.faults.deployment import JOB, Deployment, elapsed

# finite but generous: a loaded 2-core machine also trains the session's teacher first
pytestmark = pytest.mark.timeout(1200)


def test_s3_stopped_mid_job_fails_it_clearly_and_serves_nothing_half_written(
    deployment: Deployment, teacher_file: Path
) -> None:
    teacher_id = deployment.upload_teacher(teacher_file)
    deployment.start_worker()
    job_id = deployment.submit(teacher_id)
    deployment.wait_for_step(job_id, 5)
    assert deployment.job(job_id)["progress"]["iteration"] < JOB["checkpoint_every"]
    deployment.s3.stop()  # the next checkpoint write finds nothing listening
    stopped = time.monotonic()

    final = deployment.wait_for_end(job_id, timeout=240)
    print(f"FIGURE storage_stopped: job {final['status']} {elapsed(stopped)}s after S3 stopped")
    assert final["status"] == "failed", final
    assert final["error"]["code"] == "storage_unavailable", final["error"]
    assert "resubmitted once storage is back" in final["error"]["message"]

    deployment.s3.start()  # storage back (moto kept its buckets): still nothing to download
    download = deployment.student(job_id)
    assert download.status_code == 409, download.text
    assert download.json()["error"]["code"] == "student_not_ready"
    store = deployment.s3.store()
    assert not store.exists(student_key(job_id))
    assert deployment.checkpoint(job_id) is None  # the write that failed left no object behind
