"""Teachers above the forward-check size are checked in flat memory: header against the
architecture, every float finite (read in chunks), no copy of the weights in the API process."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save, save_file

from api.main import create_app
from core.models import build
from core.weights import WeightsError, scan_finite
from service.queue import InProcessJobQueue
from service.settings import Settings
from tests.memory import CLEAR_REFS, peak_rss, reset_peak_rss


@pytest.fixture
def flat_client(settings: Settings) -> Iterator[TestClient]:
    """Every upload takes the large-teacher path (nothing is loaded or run at upload)."""
    settings.forward_check_max_bytes = 1024
    with TestClient(create_app(settings, queue=InProcessJobQueue())) as client:
        yield client


def lenet_weights(**changes: torch.Tensor) -> bytes:
    torch.manual_seed(0)
    weights = {name: tensor.clone() for name, tensor in build("lenet5").state_dict().items()}
    weights.update(changes)
    return save(weights)


def post(client: TestClient, content: bytes) -> dict:
    response = client.post(
        "/v1/teachers",
        files={"file": ("teacher.safetensors", io.BytesIO(content))},
        data={"architecture": "lenet5"},
    )
    return {"status": response.status_code, **response.json()}


def test_a_sound_large_teacher_is_accepted(flat_client: TestClient) -> None:
    body = post(flat_client, lenet_weights())
    assert body["status"] == 201, body
    assert body["parameter_count"] == sum(p.numel() for p in build("lenet5").parameters())


def test_nan_in_the_last_element_is_found(flat_client: TestClient) -> None:
    torch.manual_seed(0)
    last_name, last = list(build("lenet5").state_dict().items())[-1]
    poisoned = last.clone()
    poisoned.view(-1)[-1] = float("nan")
    body = post(flat_client, lenet_weights(**{last_name: poisoned}))
    assert body["status"] == 422 and body["error"]["code"] == "invalid_weights", body
    assert last_name in body["error"]["message"] and "NaN" in body["error"]["message"]


def test_a_wrong_shape_is_named_from_the_header(flat_client: TestClient) -> None:
    body = post(flat_client, lenet_weights(**{"classifier.3.weight": torch.zeros(7, 84)}))
    assert body["status"] == 422, body
    assert "classifier.3.weight (expected [10, 84], got [7, 84])" in body["error"]["message"]
    assert flat_client.get("/v1/teachers").json()["items"] == []


def test_the_scan_crosses_chunk_boundaries(tmp_path: Path) -> None:
    values = torch.arange(1000, dtype=torch.float32)
    values[777] = float("inf")
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.ones(3, dtype=torch.float16), "b": values}, str(path))
    with pytest.raises(WeightsError, match="tensor b holds NaN or infinite values"):
        scan_finite(path, chunk_bytes=64)  # 16 floats a chunk: the inf sits in chunk 48


@pytest.mark.skipif(not CLEAR_REFS.exists(), reason="needs Linux /proc to read the peak RSS")
def test_scanning_256_mb_of_weights_keeps_memory_flat(tmp_path: Path) -> None:
    path = tmp_path / "big.safetensors"
    save_file({"w": torch.zeros(64 * 1024 * 1024)}, str(path))  # 256 MiB of float32
    reset_peak_rss()
    start = peak_rss()
    scan_finite(path)
    assert peak_rss() - start < 64 * 2**20
