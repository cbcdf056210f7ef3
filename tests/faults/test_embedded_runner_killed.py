"""The embedded default's runner is a child process of `dfkd serve`: when it dies mid-job (out of
memory, a crash in native code) the API stays up, a new runner takes its place and the job comes
back from its lease and resumes from its checkpoint; when the API process is killed outright, its
runner goes with it instead of training on unseen."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.faults.deployment import FAST_LEASES, JOB
from tests.processes import (
    embedded_env,
    start_api,
    stop,
    upload_lenet_teacher,
    wait_for_job,
    wait_until,
)

pytestmark = pytest.mark.timeout(600)


def runner_pids(api_pid: int) -> set[int]:
    """The API process's multiprocessing children that run jobs (not the resource tracker)."""
    pids: set[int] = set()
    for task in Path(f"/proc/{api_pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace")
            except FileNotFoundError:
                continue
            if "spawn_main" in command:
                pids.add(int(child))
    return pids


def the_runner(api_pid: int) -> int:
    """Waits for the API's one runner process; returns its pid."""
    wait_until(lambda: len(runner_pids(api_pid)) == 1, 60, "one runner process")
    (runner,) = runner_pids(api_pid)
    return runner


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except FileNotFoundError:
        return False
    return state != "Z"


def start_embedded(tmp_path: Path, **settings: str) -> tuple[object, str]:
    # the test's settings override the fast leases
    env = embedded_env(tmp_path / "data", **{"DFKD_LOG_FORMAT": "text", **FAST_LEASES, **settings})
    return start_api(env, tmp_path / "serve.log")


def submit(client: httpx.Client, teacher_file: Path, **changes: object) -> str:
    teacher_id = upload_lenet_teacher(client, teacher_file)
    job = client.post("/v1/jobs", json={**JOB, "teacher_id": teacher_id, **changes})
    assert job.status_code == 202, job.text
    return job.json()["id"]


def wait_for_step(client: httpx.Client, job_id: str, step: int, timeout: float = 180) -> None:
    wait_until(
        lambda: client.get(f"/v1/jobs/{job_id}").json()["progress"]["iteration"] >= step,
        timeout,
        f"job {job_id} to pass step {step}",
    )


def test_a_runner_killed_mid_job_is_replaced_and_the_job_resumes_from_its_checkpoint(
    tmp_path: Path, teacher_file: Path
) -> None:
    # a lease far longer than the whole test: the job can only come back because the monitor
    # saw its runner die, not because the lease lapsed
    process, base = start_embedded(tmp_path, DFKD_JOB_LEASE_SECONDS="900")
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            runner = the_runner(process.pid)
            job_id = submit(client, teacher_file, iterations=200)
            wait_for_step(client, job_id, JOB["checkpoint_every"] + 5)

            os.kill(runner, signal.SIGKILL)
            killed = time.monotonic()
            killed_step = client.get(f"/v1/jobs/{job_id}").json()["progress"]["iteration"]
            assert client.get("/healthz").status_code == 200  # the API did not go with it
            wait_until(lambda: runner_pids(process.pid) - {runner}, 60, "a new runner in its place")
            wait_until(
                lambda: client.get(f"/v1/jobs/{job_id}").json()["attempts"] == 2,
                60,
                "the job's second attempt",
            )
            print(
                f"FIGURE job back in its second attempt {time.monotonic() - killed:.1f}s after kill -9"
            )
            final = wait_for_job(client, job_id, timeout=300)
            events = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 200}).json()
    finally:
        stop(process)
    assert final["status"] == "succeeded", final
    assert final["attempts"] == 2
    messages = [event["message"] for event in events["items"]]
    assert any("lease of attempt 1 lapsed" in message for message in messages), messages
    resumed = [re.search(r"resuming from the checkpoint at step (\d+)", m) for m in messages]
    resumed_steps = [int(match.group(1)) for match in resumed if match]
    assert resumed_steps and 0 < resumed_steps[0] <= killed_step, messages
    log = (tmp_path / "serve.log").read_text()
    assert f"while running job {job_id}" in log, log[-3000:]


def test_a_killed_api_process_takes_its_runner_with_it(tmp_path: Path, teacher_file: Path) -> None:
    process, base = start_embedded(tmp_path)
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            runner = the_runner(process.pid)
            job_id = submit(client, teacher_file, iterations=2000)
            wait_for_step(client, job_id, 5)
        process.kill()
        process.wait(10)
        started = time.monotonic()
        wait_until(lambda: not alive(runner), 10, "the runner to exit with the API")
        print(f"FIGURE runner gone {time.monotonic() - started:.2f}s after kill -9 of the API")
    finally:
        stop(process)
        if alive(runner):
            os.kill(runner, signal.SIGKILL)


def test_a_job_past_the_hard_time_limit_has_its_runner_killed_and_fails_with_time_limit(
    tmp_path: Path, teacher_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # checkpoints too rare for the soft limit to act: only the hard limit can stop this job
    monkeypatch.setenv("DFKD_JOB_SOFT_TIME_LIMIT_SECONDS", "3")
    monkeypatch.setenv("DFKD_JOB_HARD_TIME_LIMIT_SECONDS", "10")
    process, base = start_embedded(tmp_path)
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            runner = the_runner(process.pid)
            job_id = submit(client, teacher_file, iterations=100_000, checkpoint_every=100_000)
            final = wait_for_job(client, job_id, timeout=180)
            assert client.get("/healthz").status_code == 200
            wait_until(lambda: runner_pids(process.pid) - {runner}, 60, "a new runner")
    finally:
        stop(process)
    assert final["status"] == "failed", final
    assert final["error"]["code"] == "time_limit", final["error"]
    assert "past the hard time limit of 10s" in final["error"]["message"]
    assert final["attempts"] == 1  # not handed to another runner
    assert 0 < final["progress"]["iteration"] < 100_000
    assert (
        "past the hard time limit of 10s: killing its runner"
        in (tmp_path / "serve.log").read_text()
    )
