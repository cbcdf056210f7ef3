"""Issue 20's model, archive and header attacks against `dfkd serve` on the production shape
(PostgreSQL, a Redis broker, S3 over HTTP): each refused with its 422, naming the bound, the
API process's peak memory barely moving; an activation record attached to a teacher stored in S3
without the teacher's weights entering the API."""

from __future__ import annotations

import io
import json
import secrets
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import save

from core.datasets import LabelledImages
from core.metadata import metadata_bytes, record_metadata
from core.models import build
from tests.memory import CLEAR_REFS, peak_rss, reset_peak_rss
from tests.processes import DFKD, start_api, stop

MiB = 1024 * 1024
pytestmark = pytest.mark.skipif(not CLEAR_REFS.exists(), reason="needs /proc/<pid>/clear_refs")


@pytest.fixture
def api(
    postgres_url: str, redis_url: str, s3_endpoint: dict[str, str], tmp_path: Path
) -> Iterator[tuple[httpx.Client, int]]:
    env = {
        "DFKD_DATABASE_URL": postgres_url,
        "DFKD_BROKER_URL": redis_url,
        "DFKD_CELERY_QUEUE": f"dfkd-test-{secrets.token_hex(4)}",
        "DFKD_DATA_DIR": str(tmp_path / "data"),
        **s3_endpoint,
    }
    migrate = subprocess.run(
        [DFKD, "migrate"], env=env | {"PATH": ""}, capture_output=True, text=True, timeout=60
    )
    assert migrate.returncode == 0, migrate.stderr
    process, base = start_api(env, tmp_path / "api.log")
    try:
        with httpx.Client(base_url=base, timeout=120) as client:
            yield client, process.pid
    finally:
        stop(process)


def growth_of(pid: int, send: Callable[[], httpx.Response]) -> tuple[httpx.Response, int]:
    reset_peak_rss(pid)
    start = peak_rss(pid)
    response = send()
    return response, peak_rss(pid) - start


def refused(response: httpx.Response, code: str, *fragments: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    for fragment in fragments:
        assert fragment in error["message"], error
    assert len(response.content) < 2048


def test_bounded_models_archives_and_headers_on_the_production_shape(
    api: tuple[httpx.Client, int],
) -> None:
    client, pid = api
    torch.manual_seed(0)
    teacher_model = build("hinton1200", image_size=96).eval()  # 48 MB of weights
    teacher = client.post(
        "/v1/teachers",
        files={"file": ("t.safetensors", save(teacher_model.state_dict()))},
        data={"architecture": "hinton1200", "architecture_kwargs": '{"image_size": 96}'},
    )
    assert teacher.status_code == 201, teacher.text
    teacher_id = teacher.json()["id"]
    images = torch.randn(40, 1, 96, 96, generator=torch.Generator().manual_seed(1))
    record = metadata_bytes(
        record_metadata(teacher_model, LabelledImages(images, torch.arange(40) % 10), "all_layers")
    )
    del teacher_model

    # 10. the record is checked against the teacher in S3 without loading its weights
    put, growth = growth_of(
        pid,
        lambda: client.put(
            f"/v1/teachers/{teacher_id}/metadata", files={"metadata": ("m", record)}
        ),
    )
    assert put.status_code == 200, put.text
    assert put.json()["metadata"]["warning"] is None
    assert growth < 16 * MiB, f"PUT metadata grew the API by {growth / MiB:.0f} MiB"

    buffer = io.BytesIO()  # 6. 128 MiB of zeros in ~130 KB
    np.savez_compressed(
        buffer, images=np.zeros((128, 1, 1024, 1024), np.uint8), labels=np.zeros(128, np.int64)
    )
    header = json.dumps({"x" * 2 * MiB: {"dtype": "F32", "shape": [1]}}).encode()

    def wrn_teacher(kwargs: str) -> Callable[[], httpx.Response]:
        weights = save(build("wrn").state_dict())  # WRN-16-1 at 32 px, 700 KB
        return lambda: client.post(
            "/v1/teachers",
            files={"file": ("t", weights)},
            data={"architecture": "wrn", "architecture_kwargs": kwargs},
        )

    attacks = [
        (  # 2.
            wrn_teacher('{"image_size": 1536}'),
            "invalid_architecture",
            ["image_size must be from 8 to 512, got 1536"],
        ),
        (  # 3.
            lambda: client.post(
                "/v1/jobs",
                json={
                    "teacher_id": teacher_id,
                    "student": {"architecture": "wrn", "kwargs": {"widen_factor": 110}},
                    "iterations": 100,
                },
            ),
            "invalid_architecture",
            ["widen_factor must be from 1 to 20, got 110"],
        ),
        (  # 4.
            wrn_teacher('{"depth": 12004}'),
            "invalid_architecture",
            ["depth must be from 10 to 100, got 12004"],
        ),
        (  # 6.
            lambda: client.post("/v1/datasets", files={"file": ("d.npz", buffer.getvalue())}),
            "invalid_dataset",
            ["zip bomb"],
        ),
        (  # 7.
            lambda: client.post(
                "/v1/teachers",
                files={"file": ("t", struct.pack("<Q", len(header)) + header + b"\0" * 4)},
                data={"architecture": "lenet5"},
            ),
            "invalid_weights",
            ["more than the 1048576 allowed"],
        ),
        (  # 9.
            lambda: client.post(
                "/v1/jobs",
                json={
                    "teacher_id": teacher_id,
                    "method": "lopes",
                    "student": {"architecture": "hinton800"},
                    "iterations": 100,
                    "hyperparameters": {"samples": 10_000_000},
                },
            ),
            "validation_error",
            ["DFKD_MAX_LOPES_SAMPLE_BYTES", "at most"],
        ),
    ]
    for send, code, fragments in attacks:
        response, growth = growth_of(pid, send)
        refused(response, code, *fragments)
        assert growth < 16 * MiB, f"{fragments}: the API grew by {growth / MiB:.0f} MiB"
    assert [item["id"] for item in client.get("/v1/teachers").json()["items"]] == [teacher_id]
    assert client.get("/v1/datasets").json()["items"] == []
    assert client.get("/v1/jobs").json()["items"] == []
