from __future__ import annotations

import re

from fastapi.testclient import TestClient

from service.settings import Settings
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
