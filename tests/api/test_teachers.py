from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save

from core.models import build
from service.settings import Settings


def upload(client: TestClient, content: bytes, **fields: str) -> httpx.Response:
    data = {"architecture": "lenet5", **fields}
    return client.post(
        "/v1/teachers", files={"file": ("teacher.bin", io.BytesIO(content))}, data=data
    )


def test_upload_returns_identity_size_and_parameter_count(
    client: TestClient, teacher_file: Path
) -> None:
    content = teacher_file.read_bytes()
    response = upload(
        client, content, name="mnist lenet", input_mean="[0.1307]", input_std="[0.3081]"
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"].startswith("tch_")
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert body["size_bytes"] == len(content)
    assert body["parameter_count"] == sum(p.numel() for p in build("lenet5").parameters())
    assert body["input_shape"] == [1, 32, 32] and body["num_classes"] == 10
    assert body["input_mean"] == [0.1307] and body["input_std"] == [0.3081]
    assert client.get(f"/v1/teachers/{body['id']}").json() == body
    assert client.get("/v1/teachers").json()["items"][0]["id"] == body["id"]


def test_weights_of_another_architecture_are_refused_naming_the_tensors(client: TestClient) -> None:
    response = upload(client, save(build("lenet5_half").state_dict()))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_weights"
    assert "block1.0.weight (expected [6, 1, 5, 5], got [3, 1, 5, 5])" in error["message"]


def test_missing_and_unexpected_tensors_are_named(client: TestClient) -> None:
    weights = build("lenet5").state_dict()
    weights.pop("classifier.3.bias")
    weights["extra.weight"] = torch.zeros(2)
    error = upload(client, save(weights)).json()["error"]
    assert "missing tensors: classifier.3.bias" in error["message"]
    assert "unexpected tensors: extra.weight" in error["message"]


def test_class_count_mismatch_is_refused(client: TestClient, teacher_file: Path) -> None:
    response = upload(client, teacher_file.read_bytes(), architecture_kwargs='{"num_classes": 7}')
    assert response.status_code == 422
    assert "classifier.3.weight" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("fields", "code", "fragment"),
    [
        ({"architecture": "vgg99"}, "invalid_architecture", "unknown architecture 'vgg99'"),
        ({"architecture_kwargs": "{nope"}, "invalid_form_field", "must be a JSON object"),
        ({"architecture_kwargs": "[1]"}, "invalid_form_field", "must be a JSON object"),
        (
            {"architecture_kwargs": '{"depth": 3}'},
            "invalid_architecture",
            "takes no argument(s) ['depth']",
        ),
        ({"input_mean": "[0.1, 0.2]"}, "invalid_form_field", "needs 1 value(s)"),
        ({"input_std": "[0]"}, "invalid_form_field", "must be positive"),
        ({"input_std": "abc"}, "invalid_form_field", "must be numbers"),
        ({"format": "tflite"}, "unsupported_format", "tflite"),
    ],
)
def test_bad_form_fields_are_422_with_a_message(
    client: TestClient, teacher_file: Path, fields: dict[str, str], code: str, fragment: str
) -> None:
    response = upload(client, teacher_file.read_bytes(), **fields)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code
    assert fragment in response.json()["error"]["message"]


def test_pickles_are_refused_with_the_way_to_export_safetensors(client: TestClient) -> None:
    buffer = io.BytesIO()
    torch.save(build("lenet5").state_dict(), buffer)
    for content in (buffer.getvalue(), pickle.dumps({"weight": [1, 2, 3]})):
        response = upload(client, content)
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "pickle_refused"
        assert "save_file(model.state_dict()" in response.json()["error"]["message"]


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, b"garbage that is not safetensors at all"])
def test_unreadable_files_are_refused(client: TestClient, content: bytes) -> None:
    response = upload(client, content)
    assert response.status_code == 422
    assert response.json()["error"]["code"] in {"empty_file", "invalid_weights"}


def test_missing_file_or_architecture_is_a_validation_error(client: TestClient) -> None:
    response = client.post("/v1/teachers", data={"architecture": "lenet5"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    assert "file" in response.json()["error"]["message"]


def test_oversized_upload_is_413_and_leaves_nothing_behind(
    client: TestClient, settings: Settings
) -> None:
    response = upload(client, b"\x00" * (settings.max_upload_bytes + 1))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "upload_too_large"
    assert client.get("/v1/teachers").json()["items"] == []
    assert not any(path.is_file() for path in settings.blob_dir.rglob("*"))


def test_unknown_teacher_is_404(client: TestClient) -> None:
    response = client.get("/v1/teachers/tch_nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
