"""One request's cost is bounded on the deployment path: `dfkd serve` on PostgreSQL, a Redis
broker (a private queue no worker consumes, so jobs stay queued) and moto's S3, keys required.

A flood of open event streams leaves /healthz and the other routes answering; bodies are refused
before they are read (no key: 401; over DFKD_MAX_BODY_BYTES: 413), so the API's memory does not
grow with them."""

from __future__ import annotations

import json
import secrets
import socket
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from service.auth import create_key
from service.db import make_engine, make_session_factory, session_scope
from service.migrate import upgrade_to_head
from tests.processes import start_api, start_tiny_job, stop, wait_until
from tests.sse_clients import open_stream

STREAMS = 40


@dataclass(frozen=True)
class Deployment:
    base_url: str
    pid: int
    key: str
    job_id: str

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {key or self.key}"},
            timeout=60,
        )


@pytest.fixture
def deployment(
    tmp_path: Path,
    postgres_url: str,
    redis_url: str,
    s3_endpoint: dict[str, str],
) -> Iterator[Deployment]:
    upgrade_to_head(postgres_url)
    engine = make_engine(postgres_url)
    with session_scope(make_session_factory(engine)) as session:
        _, key = create_key(session, "flood", "test")
    engine.dispose()
    queue = f"test-limits-{secrets.token_hex(4)}"
    env = {
        "DFKD_DATA_DIR": str(tmp_path / "data"),
        "DFKD_DATABASE_URL": postgres_url,
        "DFKD_BROKER_URL": redis_url,
        "DFKD_CELERY_QUEUE": queue,
        "DFKD_REQUIRE_API_KEYS": "true",
        "DFKD_MAX_EVENT_STREAMS_PER_TENANT": str(STREAMS),
        "DFKD_MAX_EVENT_STREAMS": str(STREAMS + 10),
        **s3_endpoint,
    }
    process, base_url = start_api(env, tmp_path / "serve.log")
    try:
        with httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as client:
            job_id = start_tiny_job(client)
        yield Deployment(base_url, process.pid, key, job_id)
    finally:
        stop(process)
        redis.Redis.from_url(redis_url).delete(queue)


def healthz_ms(base_url: str, count: int) -> list[float]:
    figures = []
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for _ in range(count):
            started = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            figures.append((time.perf_counter() - started) * 1000)
    return figures


def open_streams_gauge(deployment: Deployment) -> float:
    with deployment.client() as client:
        text = client.get("/metrics").text
    line = next(line for line in text.splitlines() if line.startswith("dfkd_event_streams_open "))
    return float(line.split()[1])


def test_a_stream_flood_leaves_the_api_answering(deployment: Deployment) -> None:
    sockets = []
    try:
        for _ in range(STREAMS):
            status, sock = open_stream(deployment.base_url, deployment.job_id, deployment.key)
            sockets.append(sock)
            assert status == 200
        time.sleep(2)  # every stream has polled at least once meanwhile
        latencies = healthz_ms(deployment.base_url, 40)
        with deployment.client() as client:
            started = time.perf_counter()
            for _ in range(5):
                assert client.get("/v1/teachers").status_code == 200
                assert client.get(f"/v1/jobs/{deployment.job_id}").status_code == 200
            routes_ms = (time.perf_counter() - started) * 1000 / 10
        status, extra = open_stream(deployment.base_url, deployment.job_id, deployment.key)
        extra.close()
        assert status == 429
        assert open_streams_gauge(deployment) == STREAMS
    finally:
        for sock in sockets:
            sock.close()
    print(
        f"FIGURE {STREAMS} streams: /healthz p50 {statistics.median(latencies):.1f} ms, "
        f"max {max(latencies):.1f} ms; teachers and job routes {routes_ms:.1f} ms on average"
    )
    # before: 40 streams made /healthz take 12-15 s
    assert statistics.median(latencies) < 100, latencies
    assert max(latencies) < 1000, latencies
    assert routes_ms < 1000
    wait_until(lambda: open_streams_gauge(deployment) == 0, 30, "the streams' slots to return")


def answer_to_head(base_url: str, head: str) -> tuple[int, dict]:
    """Sends a request head only (no body byte) and reads the whole answer."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode())
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < int(
            next(
                line.split(b":")[1]
                for line in answer.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
        ):
            data = sock.recv(65536)
            assert data, f"the server closed without a whole answer: {answer!r}"
            answer += data
    status = int(answer.split(b" ", 2)[1])
    return status, json.loads(answer.split(b"\r\n\r\n", 1)[1])


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_bodies_are_refused_before_a_byte_of_them_is_read(deployment: Deployment) -> None:
    def head(authorization: str = "", length: int = 9_000_000) -> str:
        return (
            f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n{authorization}\r\n"
        )

    # the server answers although the 9 MB body never comes
    status, body = answer_to_head(deployment.base_url, head())
    assert (status, body["error"]["code"]) == (401, "missing_api_key")
    status, body = answer_to_head(deployment.base_url, head("Authorization: Bearer dfkd_nope\r\n"))
    assert (status, body["error"]["code"]) == (401, "invalid_api_key")
    status, body = answer_to_head(
        deployment.base_url, head(f"Authorization: Bearer {deployment.key}\r\n")
    )
    assert (status, body["error"]["code"]) == (413, "body_too_large")

    # the 9 MB `[[],[],...]` sent whole, without a key and chunked: memory stays flat
    payload = b"[" + b"[]," * 3_000_000 + b"[]]"
    before = peak_rss(deployment.pid)
    with httpx.Client(base_url=deployment.base_url, timeout=60) as client:
        refused = client.post(
            "/v1/jobs",
            content=iter([payload[i : i + 65536] for i in range(0, len(payload), 65536)]),
            headers={"content-type": "application/json"},
        )
    assert refused.status_code == 401, refused.text
    with deployment.client() as client:
        refused = client.post(
            "/v1/jobs",
            content=iter([payload[i : i + 65536] for i in range(0, len(payload), 65536)]),
            headers={"content-type": "application/json"},
        )
        assert refused.status_code == 413, refused.text
        assert client.get("/v1/jobs").json()["items"][0]["id"] == deployment.job_id
    growth = peak_rss(deployment.pid) - before
    print(f"FIGURE 9 MB bodies refused: API peak RSS grew by {growth / 2**20:.1f} MiB")
    assert growth < 32 * 2**20, growth  # before: +213 MB for the unauthenticated one
