"""Job events as JSON pages and as a Server-Sent Events stream that follows a running job to its end."""

from __future__ import annotations

import json
import threading

from fastapi.testclient import TestClient

from service.settings import Settings
from worker.context import make_context
from worker.job import run_job


def small_job(client: TestClient, teacher_id: str) -> str:
    body = {
        "teacher_id": teacher_id,
        "student": {"architecture": "lenet5_half"},
        "iterations": 20,
        "batch_size": 16,
        "hyperparameters": {"generator_width": 8, "log_every": 5},
    }
    return client.post("/v1/jobs", json=body).json()["id"]


def parse_sse(lines: list[str]) -> list[dict]:
    """Events as an EventSource dispatches them: a block without data (`retry:`) is none."""
    events, current = [], {}
    for line in lines:
        if not line:
            if "data" in current:
                events.append(current)
            current = {}
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(": ")
            current[field] = value
    return events


def test_sse_streams_states_and_metrics_until_the_job_ends(
    client: TestClient, settings: Settings, teacher_id: str
) -> None:
    job_id = small_job(client, teacher_id)
    runner = threading.Thread(target=run_job, args=(job_id, make_context(settings)))
    runner.start()
    lines: list[str] = []
    with client.stream(
        "GET", f"/v1/jobs/{job_id}/events", headers={"Accept": "text/event-stream"}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        ending = False
        for line in response.iter_lines():
            lines.append(line)
            ending = ending or line.startswith("event: end")
            if ending and not line:
                break
    runner.join(60)
    events = parse_sse([*lines, ""])
    kinds = [event["event"] for event in events]
    assert kinds[-1] == "end" and json.loads(events[-1]["data"]) == {"status": "succeeded"}
    states = [json.loads(e["data"])["message"] for e in events if e["event"] == "state"]
    assert states[0] == "queued" and states[-1] == "succeeded"
    kl_steps = [
        json.loads(e["data"])["step"]
        for e in events
        if e["event"] == "metric" and json.loads(e["data"])["name"] == "kl"
    ]
    assert kl_steps == [5, 10, 15, 20]

    # a reconnect with Last-Event-ID resumes after what was seen: only the end marker is left
    last_id = events[-2]["id"]
    with client.stream(
        "GET",
        f"/v1/jobs/{job_id}/events",
        headers={"Accept": "text/event-stream", "Last-Event-ID": last_id},
    ) as response:
        rest = parse_sse([*response.iter_lines(), ""])
    assert [event["event"] for event in rest] == ["end"]


def test_events_as_json_pages(client: TestClient, settings: Settings, teacher_id: str) -> None:
    job_id = small_job(client, teacher_id)
    run_job(job_id, make_context(settings))
    first = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1}).json()
    assert first["items"][0]["kind"] == "state" and first["items"][0]["message"] == "queued"
    rest = client.get(f"/v1/jobs/{job_id}/events", params={"after": first["next_after"]}).json()
    assert rest["items"][-1]["message"] == "succeeded" and rest["next_after"] is None
    assert client.get("/v1/jobs/job_nope/events").status_code == 404
    bad = client.get(
        f"/v1/jobs/{job_id}/events", headers={"Accept": "text/event-stream", "Last-Event-ID": "x"}
    )
    assert bad.status_code == 422
