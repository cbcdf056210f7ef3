"""TorchScript and torch.export teachers: off by default, structure-checked in the API, run in workers."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator

import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from api.main import create_app
from service.queue import InProcessJobQueue
from service.settings import Settings
from worker.context import make_context
from worker.job import run_job


@pytest.fixture
def trusting(settings: Settings) -> Settings:
    return settings.model_copy(update={"allow_program_teachers": True})


@pytest.fixture
def open_client(trusting: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(trusting, queue=InProcessJobQueue())) as client:
        yield client


def torchscript(model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.trace(model.eval(), torch.zeros(2, 1, 32, 32)), buffer)
    return buffer.getvalue()


def exported(model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(
        model.eval(), (torch.zeros(2, 1, 32, 32),), dynamic_shapes={"x": {0: batch}}
    )
    torch.export.save(program, buffer)
    return buffer.getvalue()


def upload(client: TestClient, content: bytes, program_format: str, **fields: str) -> dict:
    data = {"format": program_format, "input_shape": "[1, 32, 32]", "num_classes": "10"} | fields
    response = client.post("/v1/teachers", files={"file": ("teacher.bin", content)}, data=data)
    return {"status": response.status_code, **response.json()}


def test_program_teachers_are_refused_unless_the_operator_allows_them(
    client: TestClient, mnist_teacher: nn.Module
) -> None:
    body = upload(client, torchscript(mnist_teacher), "torchscript")
    assert body["status"] == 422 and body["error"]["code"] == "program_formats_disabled"
    assert "safetensors" in body["error"]["message"]


@pytest.mark.parametrize(
    ("program_format", "method"), [("torchscript", "zskt"), ("torch_export", "dfad")]
)
def test_a_program_teacher_is_distilled_by_methods_without_taps(
    open_client: TestClient,
    trusting: Settings,
    mnist_teacher: nn.Module,
    program_format: str,
    method: str,
) -> None:
    content = (
        torchscript(mnist_teacher) if program_format == "torchscript" else exported(mnist_teacher)
    )
    teacher = upload(open_client, content, program_format)
    assert teacher["status"] == 201, teacher
    assert teacher["parameter_count"] is None and teacher["input_shape"] == [1, 32, 32]
    job = open_client.post(
        "/v1/jobs",
        json={
            "teacher_id": teacher["id"],
            "method": method,
            "student": {"architecture": "lenet5_half"},
            "iterations": 3,
            "batch_size": 16,
            "mte_images": 0,
        },
    ).json()
    run_job(job["id"], make_context(trusting))
    final = open_client.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "succeeded", final["error"]
    if method == "zskt":
        warnings = [
            e["message"]
            for e in open_client.get(f"/v1/jobs/{job['id']}/events").json()["items"]
            if e["kind"] == "warning"
        ]
        assert any("attention transfer disabled" in w for w in warnings)


def bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model/data.pkl", b"\0" * (20 * 1024 * 1024))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "fields", "code"),
    [
        (bomb(), {}, "invalid_program"),
        (b"definitely not a zip archive", {}, "invalid_program"),
        (b"PK", {"input_shape": "[1, 32]"}, "invalid_form_field"),
        (b"PK", {"num_classes": ""}, "invalid_form_field"),
    ],
)
def test_broken_program_uploads_are_refused_before_anything_runs(
    open_client: TestClient, content: bytes, fields: dict[str, str], code: str
) -> None:
    body = upload(open_client, content, "torchscript", **fields)
    assert body["status"] == 422, body
    assert body["error"]["code"] == code
