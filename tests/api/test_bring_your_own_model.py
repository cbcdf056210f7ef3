"""Bring your own model, over HTTP: a torchvision ResNet-18 trained here on the digits goes in as
ONNX and by name (torchvision:resnet18 + safetensors), a timm student comes out and loads with
timm from the downloaded safetensors and config.json; a timm teacher runs at 224 px; a job too
large for the worker's memory fails at once naming the batch that fits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import onnxruntime
import pytest
import timm
import torch
import torchvision
from fastapi.testclient import TestClient
from safetensors.torch import save_file
from torch import nn

from api.main import create_app
from core.datasets import LabelledImages
from core.evaluation import accuracy
from core.models import build
from core.training_supervised import train_classifier
from service.migrate import upgrade_to_head
from service.queue import InProcessJobQueue
from service.settings import Settings
from worker.context import make_context
from worker.job import run_job

IMAGES = 1500  # one epoch on these: about 90% held out
# ZSKT: one teacher pass forward and back per iteration, the student's steps on the same batch
# cheap beside it; 60 iterations reach 25-45% held out (chance: 10%) in about a minute here.
DISTILLATION = {
    "method": "zskt",
    "student": {"architecture": "timm:test_resnet"},
    "iterations": 60,
    "batch_size": 32,
    "seed": 0,
    "hyperparameters": {"generator_width": 32, "student_steps": 20, "log_every": 10},
}


def rgb(data: LabelledImages) -> LabelledImages:
    return LabelledImages(data.images.repeat(1, 3, 1, 1), data.labels)


@pytest.fixture(scope="module")
def resnet18(digits: tuple[LabelledImages, LabelledImages]) -> nn.Module:
    """torchvision's own ResNet-18 (3 channels, 32 px digits), trained for one epoch here."""
    torch.manual_seed(0)
    train, heldout = digits
    model = torchvision.models.resnet18(num_classes=10)
    subset = LabelledImages(train.images[:IMAGES], train.labels[:IMAGES])
    train_classifier(model, rgb(subset), epochs=1, batch_size=32, seed=0)
    assert accuracy(model, rgb(heldout).images, heldout.labels) > 0.8, "the teacher did not train"
    return model


@pytest.fixture(scope="module")
def resnet18_onnx(resnet18: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "resnet18.onnx"
    torch.onnx.export(
        resnet18,
        (torch.zeros(2, 3, 32, 32),),
        str(path),
        dynamo=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    return path


@pytest.fixture
def big_client(tmp_path: Path) -> Iterator[tuple[TestClient, Settings]]:
    """The embedded default with an upload cap that takes a ResNet-18 (45 MB)."""
    settings = Settings(data_dir=tmp_path / "data", max_upload_bytes=64 * 1024 * 1024)
    settings.data_dir.mkdir(parents=True)
    upgrade_to_head(settings.resolved_database_url)
    with TestClient(create_app(settings, queue=InProcessJobQueue())) as client:
        yield client, settings


def run(client: TestClient, settings: Settings, body: dict) -> dict:
    job = client.post("/v1/jobs", json=body)
    assert job.status_code == 202, job.text
    run_job(job.json()["id"], make_context(settings))
    return client.get(f"/v1/jobs/{job.json()['id']}").json()


def test_an_onnx_resnet18_distils_into_a_timm_student_that_timm_loads(
    big_client: tuple[TestClient, Settings],
    resnet18_onnx: Path,
    digits: tuple[LabelledImages, LabelledImages],
    tmp_path: Path,
) -> None:
    client, settings = big_client
    with resnet18_onnx.open("rb") as handle:
        uploaded = client.post(
            "/v1/teachers",
            files={"file": ("resnet18.onnx", handle)},
            data={"format": "onnx", "name": "platform export"},
        )
    assert uploaded.status_code == 201, uploaded.text
    teacher = uploaded.json()
    assert (teacher["input_shape"], teacher["num_classes"]) == ([3, 32, 32], 10)
    assert teacher["conversion"]["max_abs_difference"] < 1e-4
    assert teacher["parameter_count"] > 11_000_000

    final = run(client, settings, {"teacher_id": teacher["id"], **DISTILLATION})
    assert final["status"] == "succeeded", final["error"]
    events = [e["message"] for e in client.get(f"/v1/jobs/{final['id']}/events").json()["items"]]
    assert any("attention transfer disabled" in message for message in events)

    # the platform's side: config.json + model.safetensors in a folder, one line of timm
    folder = tmp_path / "student"
    folder.mkdir()
    config = client.get(f"/v1/jobs/{final['id']}/student/config")
    assert config.status_code == 200, config.text
    assert config.json()["teacher_sha256"] == teacher["sha256"]
    assert config.json()["method"] == "zskt"
    (folder / "config.json").write_text(config.text)
    (folder / "model.safetensors").write_bytes(client.get(final["links"]["student"]).content)
    student = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    heldout = rgb(digits[1])
    score = accuracy(student, heldout.images, heldout.labels)
    assert score > 0.2, f"the timm student scored {score:.3f} (chance: 0.1)"

    onnx = client.get(final["links"]["student"], params={"format": "onnx"})
    session = onnxruntime.InferenceSession(onnx.content, providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: heldout.images[:64].numpy()})
    with torch.no_grad():
        assert (logits.argmax(1) == student(heldout.images[:64]).argmax(1).numpy()).all()


def test_torchvision_resnet18_by_name_with_its_safetensors(
    big_client: tuple[TestClient, Settings], resnet18: nn.Module, tmp_path: Path
) -> None:
    client, settings = big_client
    weights = tmp_path / "resnet18.safetensors"
    save_file(resnet18.state_dict(), str(weights))
    form = {
        "architecture": "torchvision:resnet18",
        "architecture_kwargs": json.dumps({"num_classes": 10}),
        "input_shape": "[3, 32, 32]",
    }
    with weights.open("rb") as handle:
        uploaded = client.post("/v1/teachers", files={"file": ("r.safetensors", handle)}, data=form)
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["parameter_count"] == sum(p.numel() for p in resnet18.parameters())

    # timm's ResNet-18 names its tensors as torchvision's does; another network's do not fit
    with weights.open("rb") as handle:
        wrong = client.post(
            "/v1/teachers",
            files={"file": ("r.safetensors", handle)},
            data={**form, "architecture": "timm:resnet34"},
        )
    assert wrong.status_code == 422 and "missing tensors: layer1.2" in wrong.text

    body = {
        "teacher_id": uploaded.json()["id"],
        "method": "zskt",
        "student": {"architecture": "timm:test_resnet"},
        "iterations": 2,
        "batch_size": 8,
        "hyperparameters": {"generator_width": 16, "student_steps": 1},
    }
    final = run(client, settings, body)
    assert final["status"] == "succeeded", final["error"]
    events = [e["message"] for e in client.get(f"/v1/jobs/{final['id']}/events").json()["items"]]
    # torchvision's stages and timm's feature_info both give layer1..layer4, at the same
    # strides (8, 4, 2, 1 px at 32 px): every pair matches, attention transfer runs in full
    assert not any("attention transfer" in message for message in events), events


def test_a_timm_teacher_at_224_px_runs_and_a_batch_too_large_fails_at_once(
    big_client: tuple[TestClient, Settings], tmp_path: Path
) -> None:
    client, settings = big_client
    torch.manual_seed(0)
    weights = tmp_path / "t.safetensors"
    save_file(timm.create_model("test_resnet", num_classes=5).state_dict(), str(weights))
    with weights.open("rb") as handle:
        uploaded = client.post(
            "/v1/teachers",
            files={"file": ("t.safetensors", handle)},
            data={
                "architecture": "timm:test_resnet",
                "architecture_kwargs": '{"num_classes": 5}',
                "input_shape": "[3, 224, 224]",
            },
        )
    assert uploaded.status_code == 201, uploaded.text
    body = {
        "teacher_id": uploaded.json()["id"],
        "method": "dfad",
        "student": {"architecture": "timm:test_resnet"},
        "iterations": 2,
        "batch_size": 4,
        "hyperparameters": {"student_steps": 1, "generator_width": 0.25},
    }
    final = run(client, settings, body)
    assert final["status"] == "succeeded", final["error"]
    assert final["hyperparameters"]["generator"] == "dcgan"  # generator B above 64 px

    settings.worker_memory_bytes = 2 * 1024**3
    too_large = run(client, settings, {**body, "batch_size": 4096})
    assert too_large["status"] == "failed"
    assert too_large["error"]["code"] == "out_of_memory"
    assert "the largest batch that fits is" in too_large["error"]["message"]
    assert too_large["progress"]["iteration"] == 0


def test_a_torchvision_segmentation_teacher_by_name_distils_into_a_segmentation_student(
    big_client: tuple[TestClient, Settings], tmp_path: Path
) -> None:
    """torchvision's LR-ASPP answers {"out": ...}; the service takes its logits tensor, the
    teacher is a segmentation teacher, and DFAD runs on it into the registry's student."""
    client, settings = big_client
    torch.manual_seed(0)
    network = build("torchvision:lraspp_mobilenet_v3_large", num_classes=5)
    weights = tmp_path / "lraspp.safetensors"
    save_file(network.state_dict(), str(weights))
    form = {
        "architecture": "torchvision:lraspp_mobilenet_v3_large",
        "architecture_kwargs": json.dumps({"num_classes": 5}),
        "input_shape": "[3, 64, 64]",
    }
    with weights.open("rb") as handle:
        uploaded = client.post("/v1/teachers", files={"file": ("l.safetensors", handle)}, data=form)
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["task_type"] == "segmentation"
    assert uploaded.json()["num_classes"] == 5
    listed = client.get("/v1/architectures", params={"q": "lraspp"}).json()
    assert "torchvision:lraspp_mobilenet_v3_large" in listed["library_segmentation_models"]

    body = {
        "teacher_id": uploaded.json()["id"],
        "method": "dfad",
        "student": {"architecture": "deeplabv3_mobilenet_mini", "kwargs": {"width": 8}},
        "iterations": 2,
        "batch_size": 4,
        "hyperparameters": {"student_steps": 1},
    }
    final = run(client, settings, body)
    assert final["status"] == "succeeded", final["error"]
    onnx = client.get(final["links"]["student"], params={"format": "onnx"})
    assert onnx.status_code == 200
    refused = client.post(
        "/v1/jobs", json={**body, "student": {"architecture": "torchvision:resnet18"}}
    )
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "task_mismatch"
