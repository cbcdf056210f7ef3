from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from service.auth import create_key
from service.db import session_scope
from service.migrate import upgrade_to_head
from service.models import DEFAULT_TENANT, Job, JobStatus
from service.queue import InProcessJobQueue
from service.settings import Settings
from tests.processes import free_port, start_tiny_job
from worker.context import make_context
from worker.job import run_job


def metric(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} ([0-9.e+-]+)$", text, re.M)
    assert match, f"{name}{labels} not in /metrics"
    return float(match.group(1))


def test_prometheus_metrics_count_jobs_queue_and_requests(
    client: TestClient, settings: Settings, teacher_id: str
) -> None:
    body = {
        "teacher_id": teacher_id,
        "student": {"architecture": "lenet5_half"},
        "iterations": 2,
        "batch_size": 8,
    }
    first = client.post("/v1/jobs", json=body | {"hyperparameters": {"generator_width": 8}}).json()
    client.post("/v1/jobs", json=body)
    text = client.get("/metrics").text
    assert metric(text, "dfkd_jobs", '{status="queued"}') == 2
    assert metric(text, "dfkd_queue_depth") == 2
    assert (
        metric(
            text,
            "dfkd_http_request_duration_seconds_count",
            '{method="POST",route="/v1/jobs",status="202"}',
        )
        == 2
    )
    run_job(first["id"], make_context(settings))
    text = client.get("/metrics").text
    assert metric(text, "dfkd_jobs", '{status="succeeded"}') == 1
    assert metric(text, "dfkd_queue_depth") == 1


def test_request_ids_are_echoed_or_made(client: TestClient) -> None:
    assert (
        client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    made = client.get("/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)


def test_metrics_carry_no_job_ids_or_tenants(client: TestClient) -> None:
    job_ids = [start_tiny_job(client) for _ in range(2)]
    with session_scope(client.app.state.sessions) as session:
        for job_id in job_ids:
            job = session.get(Job, job_id)
            job.status, job.samples_per_second, job.batch_size = JobStatus.running, 64.0, 16
    text = client.get("/metrics").text
    for job_id in job_ids:
        assert job_id not in text
    assert DEFAULT_TENANT not in text
    # two running zskt jobs at 64 samples/s with batches of 16: 8 iterations/s together
    assert metric(text, "dfkd_job_iterations_per_second", '{method="zskt"}') == 8.0
    assert client.get(f"/v1/jobs/{job_ids[0]}/metrics").status_code == 200
    text = client.get("/metrics").text
    assert 'route="/v1/jobs/{job_id}/metrics"' in text and job_ids[0] not in text


def test_metrics_behind_an_api_key(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, metrics_access="api_key")
    upgrade_to_head(settings.resolved_database_url)
    with TestClient(create_app(settings, queue=InProcessJobQueue())) as client:
        with session_scope(client.app.state.sessions) as session:
            _, key = create_key(session, "ops", "prometheus")
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        allowed = client.get("/metrics", headers={"Authorization": f"Bearer {key}"})
        assert allowed.status_code == 200 and "dfkd_jobs" in allowed.text
        assert client.get("/healthz").status_code == 200  # only /metrics needs the key


def test_metrics_on_an_internal_port_only(tmp_path: Path) -> None:
    port = free_port()
    settings = Settings(data_dir=tmp_path, metrics_access="internal", metrics_port=port)
    upgrade_to_head(settings.resolved_database_url)
    with TestClient(create_app(settings, queue=InProcessJobQueue())) as client:
        assert client.get("/metrics").status_code == 404
        internal = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert internal.status_code == 200 and "dfkd_jobs" in internal.text
    with pytest.raises(httpx.ConnectError):  # stopped with the app
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
