from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def upload(client: TestClient, content: bytes, name: str = "digits") -> dict:
    response = client.post(
        "/v1/datasets", files={"file": ("set.bin", io.BytesIO(content))}, data={"name": name}
    )
    return {"status": response.status_code, **response.json()}


def test_npz_of_pixels_is_described(client: TestClient) -> None:
    images = np.random.randint(0, 256, (12, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2] * 4)
    body = upload(client, npz(images=images, labels=labels))
    assert body["status"] == 201, body
    assert body["id"].startswith("dst_") and body["format"] == "npz"
    assert body["num_examples"] == 12 and body["image_shape"] == [1, 28, 28]
    assert body["pixel_dtype"] == "uint8" and body["class_counts"] == {"0": 4, "1": 4, "2": 4}
    assert client.get(f"/v1/datasets/{body['id']}").json()["sha256"] == body["sha256"]
    assert [d["id"] for d in client.get("/v1/datasets").json()["items"]] == [body["id"]]


def test_safetensors_of_floats_is_accepted(client: TestClient) -> None:
    content = save(
        {"images": np.zeros((4, 3, 8, 8), dtype=np.float32), "labels": np.arange(4, dtype=np.int64)}
    )
    body = upload(client, content)
    assert body["status"] == 201, body
    assert body["format"] == "safetensors" and body["image_shape"] == [3, 8, 8]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (npz(images=np.zeros((3, 8, 8), np.uint8)), "lacks array(s) ['labels']"),
        (npz(images=np.zeros((3, 8, 8), np.uint8), labels=np.zeros(2, np.int64)), "one per image"),
        (
            npz(images=np.zeros((3, 8, 8), np.uint8), labels=np.array([0.5, 1, 2])),
            "labels must be integers",
        ),
        (npz(images=np.zeros((3, 8, 8), np.uint8), labels=np.array([0, -1, 2])), ">= 0"),
        (npz(images=np.full((2, 8, 8), np.nan, np.float32), labels=np.zeros(2, np.int64)), "NaN"),
        (npz(images=np.zeros((2, 8), np.float32), labels=np.zeros(2, np.int64)), "[N, C, H, W]"),
        (
            npz(images=np.array([{"a": 1}] * 2, dtype=object), labels=np.zeros(2, np.int64)),
            "unreadable npz",
        ),
        (pickle.dumps({"images": [1]}), "neither an npz nor a safetensors"),
        (b"", "neither an npz nor a safetensors"),
    ],
)
def test_broken_sets_are_422_with_the_reason(
    client: TestClient, content: bytes, fragment: str
) -> None:
    body = upload(client, content)
    assert body["status"] == 422, body
    assert body["error"]["code"] == "invalid_dataset"
    assert fragment in body["error"]["message"]
    assert client.get("/v1/datasets").json()["items"] == []


def test_unknown_dataset_is_404(client: TestClient) -> None:
    assert client.get("/v1/datasets/dst_nope").status_code == 404
