"""Webhooks against a real HTTP receiver on loopback, verified by the standardwebhooks library."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_network

import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from service.db import make_engine, make_session_factory
from service.settings import Settings
from service.webhooks import deliver_job_webhook
from worker.context import make_context
from worker.job import run_job

SECRET = "whsec_" + base64.b64encode(b"a-very-secret-signing-key-32byte").decode()


class Receiver:
    """Answers 500 to the first `failures` deliveries, then `answer` (204) with `headers`; keeps
    what it was sent."""

    def __init__(
        self, failures: int, answer: int = 204, headers: dict[str, str] | None = None
    ) -> None:
        self.failures = failures
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                failing = len(receiver.received) <= receiver.failures
                self.send_response(500 if failing else answer)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/dfkd"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The receivers listen on loopback, which webhooks may reach only where the operator allows."""
    return settings.model_copy(update={"webhook_allowed_networks": [ip_network("127.0.0.0/8")]})


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver(failures=2)
    yield receiver
    receiver.server.shutdown()


def create_job(client: TestClient, teacher_id: str, url: str, secret: str = SECRET) -> str:
    body = {
        "teacher_id": teacher_id,
        "student": {"architecture": "lenet5_half"},
        "iterations": 2,
        "batch_size": 8,
        "hyperparameters": {"generator_width": 8},
        "webhook": {"url": url, "secret": secret},
    }
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    assert "secret" not in json.dumps(response.json()) and response.json()["webhook_url"] == url
    return response.json()["id"]


def test_success_is_delivered_signed_after_retries(
    client: TestClient,
    settings: Settings,
    teacher_id: str,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("service.webhooks.RETRY_DELAYS_SECONDS", (0.05, 0.05, 0.05))
    job_id = create_job(client, teacher_id, receiver.url)
    run_job(job_id, make_context(settings))

    assert len(receiver.received) == 3  # two 500s, then accepted
    verifier = Webhook(SECRET)
    payloads = [verifier.verify(body, headers) for headers, body in receiver.received]
    assert all(p["type"] == "job.succeeded" and p["data"]["id"] == job_id for p in payloads)
    assert (
        len({headers["webhook-id"] for headers, _ in receiver.received}) == 1
    )  # one message, retried
    attempts = [
        e["message"]
        for e in client.get(f"/v1/jobs/{job_id}/events").json()["items"]
        if e["kind"] == "webhook"
    ]
    assert [a.rsplit(": ", 1)[0] for a in attempts] == [
        f"attempt {n} to {receiver.url}" for n in (1, 2, 3)
    ]
    assert attempts[-1].endswith("HTTP 204")


def test_a_tampered_delivery_fails_verification(
    client: TestClient, settings: Settings, teacher_id: str
) -> None:
    receiver = Receiver(failures=0)
    try:
        job_id = create_job(client, teacher_id, receiver.url)
        run_job(job_id, make_context(settings))
    finally:
        receiver.server.shutdown()
    headers, body = receiver.received[0]
    with pytest.raises(Exception, match=r"(?i)signature"):
        Webhook(SECRET).verify(body.replace(b"succeeded", b"failed"), headers)


def test_cancelling_a_queued_job_sends_job_cancelled(
    client: TestClient, settings: Settings, teacher_id: str
) -> None:
    receiver = Receiver(failures=0)
    try:
        job_id = create_job(
            client, teacher_id, receiver.url, secret="plain-text-secret-of-some-length"
        )
        assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    finally:
        receiver.server.shutdown()
    headers, body = receiver.received[0]
    plain_key = base64.b64encode(b"plain-text-secret-of-some-length").decode()
    assert Webhook(plain_key).verify(body, headers)["type"] == "job.cancelled"


def test_an_unreachable_receiver_gives_up_and_says_so(
    client: TestClient, settings: Settings, teacher_id: str
) -> None:
    job_id = create_job(client, teacher_id, "http://127.0.0.1:9/nothing-listens-here")
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    client.post(f"/v1/jobs/{job_id}/cancel")
    assert deliver_job_webhook(sessions, settings, job_id, delays=(0.01, 0.01)) is False
    attempts = [
        e for e in client.get(f"/v1/jobs/{job_id}/events").json()["items"] if e["kind"] == "webhook"
    ]
    assert len(attempts) >= 3 and "ConnectError" in attempts[-1]["message"]


def test_webhook_spec_is_validated(client: TestClient, teacher_id: str) -> None:
    for webhook in ({"url": "ftp://x", "secret": "s" * 20}, {"url": "http://x", "secret": "short"}):
        body = {
            "teacher_id": teacher_id,
            "student": {"architecture": "lenet5_half"},
            "webhook": webhook,
        }
        assert client.post("/v1/jobs", json=body).status_code == 422
