"""Cancel arrives while a checkpoint is half-written: the old checkpoint stays whole and loadable
throughout, the write completes, the job ends cancelled, and its last checkpoint loads.

The job function runs in-process on the embedded default (SQLite, blob folder), with one fault
injected into its real store: the second checkpoint write stops halfway until the test says go.
"""

from __future__ import annotations

import io
import re
import threading
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import torch
from fastapi.testclient import TestClient

from core.models import build
from service.blobstore import LocalBlobStore
from service.settings import Settings
from worker.context import make_context
from worker.job import run_job

# finite but generous: a loaded 2-core machine also trains the session's teacher first
pytestmark = pytest.mark.timeout(1200)

STOP_AT_WRITE = 2  # the first checkpoint exists when the second one is cut in half


class HalfThenWait(io.RawIOBase):
    """Hands out the first half of the data, then blocks the writer until released."""

    def __init__(self, stream: BinaryIO, length: int, halfway: threading.Event) -> None:
        self.data = stream.read()
        self.half = length // 2
        self.position = 0
        self.halfway = halfway
        self.release = threading.Event()

    def read(self, size: int = -1) -> bytes:
        if self.position == self.half:
            self.halfway.set()
            assert self.release.wait(60), "the test never released the write"
        end = self.half if self.position < self.half else len(self.data)
        if size >= 0:
            end = min(end, self.position + size)
        chunk = self.data[self.position : end]
        self.position = end
        return chunk


class StallingStore(LocalBlobStore):
    """The real folder store; its STOP_AT_WRITE-th checkpoint write stalls halfway."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.checkpoint_writes = 0
        self.halfway = threading.Event()
        self.stalled: HalfThenWait | None = None

    def put(self, key: str, stream: BinaryIO, length: int) -> None:
        if key.endswith("/checkpoint.pt"):
            self.checkpoint_writes += 1
            if self.checkpoint_writes == STOP_AT_WRITE:
                self.stalled = HalfThenWait(stream, length, self.halfway)
                stream = self.stalled  # type: ignore[assignment]
        super().put(key, stream, length)


def load(path: Path) -> dict[str, Any]:
    return torch.load(io.BytesIO(path.read_bytes()), weights_only=True)


def test_cancel_during_a_checkpoint_write_ends_cancelled_with_a_checkpoint_that_loads(
    client: TestClient, settings: Settings, teacher_id: str
) -> None:
    every = 20
    job = client.post(
        "/v1/jobs",
        json={
            "teacher_id": teacher_id,
            "student": {"architecture": "lenet5_half"},
            "iterations": 100_000,
            "batch_size": 8,
            "checkpoint_every": every,
            "sample_every": 0,
            "hyperparameters": {"generator_width": 8, "log_every": 5},
        },
    ).json()
    store = StallingStore(settings.blob_dir)
    # the checkpoint is what this test reads after the end: kept (by default it goes then)
    context = make_context(settings.model_copy(update={"keep_checkpoints": True}))
    context.blobs = store
    runner = threading.Thread(target=run_job, args=(job["id"], context))
    runner.start()
    try:
        assert store.halfway.wait(180), "the second checkpoint write never started"
        folder = settings.blob_dir / "jobs" / job["id"]
        # mid-write: the half-written bytes sit in a temporary file, the latest is still whole
        assert [p.name for p in folder.glob(".part-*")], "no write in progress"
        assert load(folder / "checkpoint.pt")["step"] == every
        cancel = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert cancel.status_code == 202 and cancel.json()["cancel_requested"] is True
    finally:
        if store.stalled is not None:
            store.stalled.release.set()
        runner.join(120)
    assert not runner.is_alive()

    final = client.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "cancelled", final
    messages = [e["message"] for e in client.get(f"/v1/jobs/{job['id']}/events").json()["items"]]
    stopped = [re.search(r"cancelled at step (\d+)", m) for m in messages]
    stopped_at = next(int(match.group(1)) for match in stopped if match)
    checkpoint = load(folder / "checkpoint.pt")
    assert not list(folder.glob(".part-*"))  # nothing half-written left behind
    assert checkpoint["step"] % every == 0 and every * STOP_AT_WRITE <= checkpoint["step"]
    assert checkpoint["step"] <= stopped_at
    build("lenet5_half").load_state_dict(checkpoint["student"])  # whole, and it loads
    assert client.get(f"/v1/jobs/{job['id']}/student").status_code == 409
