"""Clients of the event stream for tests and benchmarks: many cheap open streams (raw sockets that
read only the response head) and one stream read event by event."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx


def open_stream(base_url: str, job_id: str, key: str | None = None) -> tuple[int, socket.socket]:
    """Opens `GET /v1/jobs/{id}/events` as an SSE stream and reads the response head only;
    returns the status and the socket, which the caller closes."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    sock.sendall(
        f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: {host}\r\n"
        f"Accept: text/event-stream\r\n{auth}\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(4096)
        if not data:
            break
        head += data
    return int(head.split(b" ", 2)[1]), sock


def sse_events(
    client: httpx.Client, job_id: str, headers: dict[str, str] | None = None
) -> Iterator[dict[str, str]]:
    """The stream's events as an EventSource dispatches them (a block without data is none)."""
    with client.stream(
        "GET",
        f"/v1/jobs/{job_id}/events",
        headers={"Accept": "text/event-stream", **(headers or {})},
    ) as response:
        assert response.status_code == 200, response.read()
        current: dict[str, str] = {}
        for line in response.iter_lines():
            if not line:
                if "data" in current:
                    yield current
                current = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                current[name] = value
