"""The upload cap holds for chunked bodies (no Content-Length) against a real `dfkd serve`: the
413 comes while the body is still arriving, nothing is left on disk, memory stays flat."""

from __future__ import annotations

import json
import os
import select
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.processes import embedded_env, start_api, stop

CAP = 2 * 1024 * 1024
CHUNK = 256 * 1024
BIG_CAP = 96 * 1024 * 1024
BOUNDARY = "dfkd-test-boundary"


Server = tuple[str, int, Path]


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[int], Server]]:
    """Starts `dfkd serve` on the embedded default with an upload cap and its own temporary
    folder; returns (base URL, pid, root folder)."""
    tmp_path = tmp_path_factory.mktemp("serve")
    processes = []

    def start_with_cap(cap: int) -> Server:
        root = tmp_path / f"cap-{cap}"
        (root / "tmp").mkdir(parents=True)
        env = embedded_env(root / "data", DFKD_MAX_UPLOAD_BYTES=str(cap), TMPDIR=str(root / "tmp"))
        process, base_url = start_api(env, root / "serve.log")
        processes.append(process)
        return base_url, process.pid, root

    yield start_with_cap
    for process in processes:
        stop(process)


@pytest.fixture(scope="module")
def server(serve: Callable[[int], Server]) -> Server:
    return serve(CAP)


class MultipartStream:
    """A multipart teacher upload of `size` file bytes, produced chunk by chunk; counts what the
    server pulled."""

    def __init__(self, size: int, head: bytes = b"") -> None:
        self.size = size
        self.head = head
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        yield (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="architecture"\r\n\r\n'
            f"lenet5\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; "
            f'name="file"; filename="big.safetensors"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        remaining = self.size
        block = (self.head + b"\0" * CHUNK)[:CHUNK]
        while remaining > 0:
            piece = block[: min(CHUNK, remaining)]
            block = b"\0" * CHUNK
            remaining -= len(piece)
            self.sent += len(piece)
            yield piece
        yield f"\r\n--{BOUNDARY}--\r\n".encode()


def post_chunked(base_url: str, stream: MultipartStream) -> httpx.Response:
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    with httpx.Client(base_url=base_url, timeout=60) as client:
        response = client.post("/v1/teachers", content=iter(stream), headers=headers)
    assert "content-length" not in response.request.headers  # really chunked
    assert response.request.headers["transfer-encoding"] == "chunked"
    return response


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def leftovers(root: Path) -> list[Path]:
    return [path for path in (root / "tmp").rglob("*")] + [
        path for path in (root / "data" / "blobs").rglob("*") if path.is_file()
    ]


def send_until_answered(base_url: str, stream: MultipartStream) -> tuple[int, dict]:
    """Sends the body chunk by chunk over a raw socket (HTTP/1.1 chunked), stopping as soon as
    the server answers, as a careful client would; returns the status and JSON body. httpx would
    push the whole body before reading, which hides when the server answered."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            f"POST /v1/teachers HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n".encode()
        )
        for piece in stream:
            if select.select([sock], [], [], 0)[0]:
                break  # an early answer
            try:
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < length(answer):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    head, body = answer.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body[: length(answer)])


def length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 30


def test_chunked_upload_past_the_cap_is_refused_while_it_arrives(server: Server) -> None:
    base_url, _, root = server
    stream = MultipartStream(size=200 * CAP)  # 400 MiB offered
    status, body = send_until_answered(base_url, stream)
    assert status == 413, body
    assert body["error"]["code"] == "upload_too_large"
    # answered after about the cap, not after the 400 MiB (socket buffers hold a few MiB)
    assert stream.sent < 8 * CAP, f"the server took {stream.sent} bytes before refusing"
    assert httpx.get(f"{base_url}/v1/teachers").json()["items"] == []
    assert leftovers(root) == []


def test_httpx_chunked_upload_past_the_cap_gets_the_413(server: Server) -> None:
    """httpx streams a generator body with Transfer-Encoding: chunked; it gets the JSON 413."""
    base_url, _, root = server
    response = post_chunked(base_url, MultipartStream(size=20 * CAP))
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "upload_too_large"
    assert leftovers(root) == []


def test_chunked_upload_under_the_cap_reaches_the_route(server: Server) -> None:
    base_url, _, root = server
    response = post_chunked(base_url, MultipartStream(size=CAP - 4096))
    assert response.status_code == 422, response.text  # zeros are no safetensors file
    assert response.json()["error"]["code"] == "invalid_weights"
    assert leftovers(root) == []


def test_server_memory_is_flat_in_the_upload_size(serve: Callable[[int], Server]) -> None:
    """Under the cap, a body is spooled to disk in chunks: the server's peak RSS does not grow
    with the upload (/proc/<pid>/status VmHWM, reset through clear_refs before each upload)."""
    base_url, pid, root = serve(BIG_CAP)
    post_chunked(base_url, MultipartStream(size=CHUNK))  # warm the route up
    clear_refs = Path(f"/proc/{pid}/clear_refs")
    if not os.access(clear_refs, os.W_OK):
        pytest.skip("cannot reset the server's peak RSS here")
    growth = {}
    for size in (4 * 1024 * 1024, BIG_CAP - 1024 * 1024):
        clear_refs.write_text("5")  # resets VmHWM to the current RSS
        before = peak_rss(pid)
        response = post_chunked(base_url, MultipartStream(size=size))
        assert response.status_code == 422, response.text
        growth[size] = peak_rss(pid) - before
    small, large = growth.values()
    # holding the larger upload in memory would add ~92 MiB more than the smaller one
    assert large - small < 24 * 1024 * 1024, growth
    assert leftovers(root) == []
