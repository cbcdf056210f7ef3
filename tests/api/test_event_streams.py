"""Event streams cannot exhaust the API: they hold no pooled connection while they wait, they are
capped per tenant and in total (429), they end at their maximum age with a resumable
`reconnect` event, and a revoked key ends them. The API runs under uvicorn in this process (real
HTTP, so streams really stay open), on the embedded default with keys required; jobs stay queued."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from api.event_stream import POLL_THREADS
from api.main import create_app
from service.auth import create_key, revoke_key
from service.db import session_scope
from service.job_state import add_event
from service.migrate import upgrade_to_head
from service.models import ApiKey
from service.queue import InProcessJobQueue
from service.settings import Settings
from tests.processes import free_port, start_tiny_job, wait_until
from tests.sse_clients import open_stream, sse_events


@dataclass(frozen=True)
class Tenant:
    key: str
    key_id: str
    job_id: str


@dataclass(frozen=True)
class Served:
    app: FastAPI
    base_url: str
    tenants: dict[str, Tenant]

    def client(self, tenant: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.tenants[tenant].key}"},
            timeout=30,
        )

    def checked_out_connections(self) -> int:
        return self.app.state.sessions.kw["bind"].pool.checkedout()


@contextmanager
def uvicorn_thread(app: FastAPI) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 30, "uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Starts the API with settings overrides; tenants `a` and `b`, each with a key and a queued
    job of its own."""
    with_servers: list = []

    def start(**overrides: object) -> Served:
        settings = Settings(data_dir=tmp_path / "data", require_api_keys=True, **overrides)
        settings.data_dir.mkdir(parents=True)
        upgrade_to_head(settings.resolved_database_url)
        app = create_app(settings, queue=InProcessJobQueue())
        keys = {}
        with session_scope(app.state.sessions) as session:
            for name in ("a", "b"):
                row, secret = create_key(session, name, "test")
                keys[name] = (secret, row.id)
        context = uvicorn_thread(app)
        base_url = context.__enter__()
        with_servers.append(context)
        tenants = {}
        for name, (secret, key_id) in keys.items():
            with httpx.Client(
                base_url=base_url, headers={"Authorization": f"Bearer {secret}"}, timeout=30
            ) as client:
                tenants[name] = Tenant(secret, key_id, start_tiny_job(client))
        return Served(app, base_url, tenants)

    yield start
    for context in with_servers:
        context.__exit__(None, None, None)


def open_streams(served: Served, tenant: str, count: int) -> list:
    sockets = []
    for _ in range(count):
        status, sock = open_stream(
            served.base_url, served.tenants[tenant].job_id, served.tenants[tenant].key
        )
        assert status == 200
        sockets.append(sock)
    return sockets


def open_gauge(served: Served) -> float:
    with served.client("a") as client:
        text = client.get("/metrics").text
    return float(
        next(
            line.split()[1]
            for line in text.splitlines()
            if line.startswith("dfkd_event_streams_open ")
        )
    )


def test_streams_hold_no_connection_and_are_capped_per_tenant_and_in_total(
    serve: Callable[..., Served],
) -> None:
    served = serve(max_event_streams=8, max_event_streams_per_tenant=6)
    sockets = open_streams(served, "a", 6)
    try:
        with served.client("a") as client:
            refused = client.get(
                f"/v1/jobs/{served.tenants['a'].job_id}/events",
                headers={"Accept": "text/event-stream"},
            )
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "too_many_streams"
        assert "DFKD_MAX_EVENT_STREAMS_PER_TENANT" in refused.json()["error"]["message"]
        assert int(refused.headers["Retry-After"]) > 0

        sockets += open_streams(served, "b", 2)  # 8 open: the total cap
        with served.client("b") as client:
            refused = client.get(
                f"/v1/jobs/{served.tenants['b'].job_id}/events",
                headers={"Accept": "text/event-stream"},
            )
            assert refused.status_code == 429, refused.text
            assert "DFKD_MAX_EVENT_STREAMS)" in refused.json()["error"]["message"]
            # JSON pages and other routes are not streams: they still work
            assert client.get(f"/v1/jobs/{served.tenants['b'].job_id}/events").status_code == 200
            assert client.get("/v1/teachers").status_code == 200

        # 8 streams polling twice a second: never more connections out than the poll threads
        # (one per open stream before: the pool ran dry at 60)
        samples = []
        for _ in range(60):
            samples.append(served.checked_out_connections())
            time.sleep(0.05)
        assert max(samples) <= POLL_THREADS, samples
        assert open_gauge(served) == 8
    finally:
        for sock in sockets:
            sock.close()

    # a client that goes away gives its slot back
    wait_until(lambda: open_gauge(served) == 0, 20, "the closed streams' slots to come back")
    sockets = open_streams(served, "a", 6)
    for sock in sockets:
        sock.close()


def test_a_revoked_key_ends_its_stream(serve: Callable[..., Served]) -> None:
    served = serve()
    tenant = served.tenants["a"]
    started = time.monotonic()
    with served.client("a") as client:
        events = sse_events(client, tenant.job_id)
        first = next(events)
        assert first["event"] == "state" and json.loads(first["data"])["message"] == "queued"
        with session_scope(served.app.state.sessions) as session:
            assert revoke_key(session, tenant.key_id)
        rest = list(events)  # ends by itself
    assert [event["event"] for event in rest] == ["unauthorized"]
    assert json.loads(rest[0]["data"])["code"] == "invalid_api_key"
    assert time.monotonic() - started < 15
    with served.client("a") as client:
        again = client.get(
            f"/v1/jobs/{tenant.job_id}/events", headers={"Accept": "text/event-stream"}
        )
    assert again.status_code == 401
    with session_scope(served.app.state.sessions) as session:
        assert session.get(ApiKey, tenant.key_id).revoked_at is not None


def test_a_stream_ends_at_its_maximum_age_and_resumes_with_last_event_id(
    serve: Callable[..., Served],
) -> None:
    served = serve(event_stream_max_seconds=1.5)
    tenant = served.tenants["a"]
    started = time.monotonic()
    with served.client("a") as client:
        first = list(sse_events(client, tenant.job_id))
        ended = time.monotonic() - started
        assert [event["event"] for event in first] == ["state", "reconnect"]
        assert "Last-Event-ID" in json.loads(first[-1]["data"])["message"]
        assert 1.5 <= ended < 10
        with session_scope(served.app.state.sessions) as session:
            add_event(session, tenant.job_id, "warning", "something new")
        resumed = list(sse_events(client, tenant.job_id, {"Last-Event-ID": first[-1]["id"]}))
    assert [event["event"] for event in resumed] == ["warning", "reconnect"]
    assert json.loads(resumed[0]["data"])["message"] == "something new"
