"""Fixtures every test layer shares: real digits and a teacher trained on them in seconds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save_file
from torch import nn

from api.main import create_app
from core.datasets import LabelledImages, mnist_digits, save_npz
from core.digit_scenes import SCENE_CLASSES, Scenes, mnist_scenes
from core.evaluation import accuracy
from core.models import build
from core.segmentation import segmentation_scores
from core.training_supervised import train_classifier
from service.migrate import upgrade_to_head
from service.queue import InProcessJobQueue
from service.settings import Settings


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one thread for the test (modules ask with
    `pytestmark = pytest.mark.usefixtures("one_thread")`): LeNet-sized batches gain little from a
    second thread, and on a CPU shared with other processes the thread pool's synchronisation
    made distillation runs ~7x slower (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits() -> tuple[LabelledImages, LabelledImages]:
    """4 000 real MNIST digits to train teachers on, 1 000 held out for every accuracy claim."""
    return mnist_digits(seed=0).split(4000)


@pytest.fixture(scope="session")
def mnist_teacher(digits: tuple[LabelledImages, LabelledImages]) -> nn.Module:
    torch.manual_seed(0)
    train, heldout = digits
    teacher = train_classifier(build("lenet5"), train, epochs=8, seed=0)
    assert accuracy(teacher, heldout.images, heldout.labels) > 0.95, (
        "the test teacher did not train"
    )
    return teacher


@pytest.fixture(scope="session")
def teacher_file(mnist_teacher: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("teacher") / "lenet5.safetensors"
    save_file(mnist_teacher.state_dict(), str(path))
    return path


@pytest.fixture(scope="session")
def batchnorm_teacher(digits: tuple[LabelledImages, LabelledImages]) -> nn.Module:
    """A small BatchNorm teacher for the methods that read BN statistics: LeNet-5 with
    BatchNorm (`lenet5_bn`), ~98% on the held-out digits after 8 epochs, ~10 s here. (A ResNet-8
    teacher, global pooling and all, is fooled by every data-free method here in CPU minutes:
    docs/methods.md, "Which BatchNorm teacher".)"""
    torch.manual_seed(0)
    train, heldout = digits
    teacher = train_classifier(build("lenet5_bn"), train, epochs=8, seed=0)
    assert accuracy(teacher, heldout.images, heldout.labels) > 0.95, (
        "the BatchNorm test teacher did not train"
    )
    return teacher


@pytest.fixture(scope="session")
def batchnorm_teacher_file(
    batchnorm_teacher: nn.Module, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The BatchNorm teacher's safetensors (tests.processes.upload_batchnorm_teacher uploads it)."""
    path = tmp_path_factory.mktemp("teacher") / "lenet5_bn.safetensors"
    save_file(batchnorm_teacher.state_dict(), str(path))
    return path


@pytest.fixture(scope="session")
def heldout_file(
    digits: tuple[LabelledImages, LabelledImages], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    path = tmp_path_factory.mktemp("data") / "heldout.npz"
    save_npz(path, digits[1])
    return path


# --- segmentation: scenes of real digits and a DeepLabV3 teacher trained on them


@pytest.fixture(scope="session")
def scenes() -> tuple[Scenes, Scenes]:
    """64 px scenes (core/digit_scenes.py): 1 200 from the first 4 000 digits to train on, 300
    from the 1 000 held out for every mIoU claim."""
    return mnist_scenes(1200, 300, canvas=64, seed=0)


@pytest.fixture(scope="session")
def segmentation_teacher(scenes: tuple[Scenes, Scenes]) -> nn.Module:
    """`deeplabv3_resnet_mini` (width 8) on the training scenes for 6 epochs (~40 s
    here): mIoU ~0.15 on held-out scenes, clearly above the background-only 0.08, which is all
    a test needs (bench/segmentation.py trains the benchmark's teacher far longer)."""
    torch.manual_seed(0)
    train, heldout = scenes
    teacher = build("deeplabv3_resnet_mini", in_channels=1, width=8)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see `one_thread`: on a shared CPU one thread is the faster
    try:
        train_classifier(
            teacher, LabelledImages(train.images, train.masks), epochs=6, batch_size=32, lr=2e-3
        )
    finally:
        torch.set_num_threads(threads)
    miou = segmentation_scores(teacher, heldout.images, heldout.masks, SCENE_CLASSES).mean_iou
    assert miou > SEGMENTATION_TEACHER_MIOU, f"the segmentation teacher did not train ({miou})"
    return teacher


# predicting background everywhere scores about 0.08 (background's IoU over 11 classes)
SEGMENTATION_TEACHER_MIOU = 0.12


@pytest.fixture(scope="session")
def segmentation_teacher_file(
    segmentation_teacher: nn.Module, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Its safetensors (tests.processes.upload_segmentation_teacher uploads it)."""
    path = tmp_path_factory.mktemp("teacher") / "deeplabv3_resnet_mini.safetensors"
    save_file(segmentation_teacher.state_dict(), str(path))
    return path


@pytest.fixture(scope="session")
def heldout_scenes_file(
    scenes: tuple[Scenes, Scenes], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The held-out scenes as a user uploads them: uint8 `images` and `masks` in an npz."""
    path = tmp_path_factory.mktemp("data") / "scenes.npz"
    heldout = scenes[1]
    np.savez_compressed(path, images=heldout.pixels(), masks=heldout.masks.numpy())
    return path


# --- the API on the embedded default, in-process


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path / "data", max_upload_bytes=5 * 1024 * 1024)
    settings.data_dir.mkdir(parents=True)
    upgrade_to_head(settings.resolved_database_url)
    return settings


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The API on the embedded default (SQLite, local folder) with no runner: jobs stay queued."""
    with TestClient(create_app(settings, queue=InProcessJobQueue())) as client:
        yield client


@pytest.fixture
def teacher_id(client: TestClient, teacher_file: Path) -> str:
    with teacher_file.open("rb") as handle:
        response = client.post(
            "/v1/teachers",
            files={"file": ("lenet5.safetensors", handle, "application/octet-stream")},
            data={"architecture": "lenet5", "input_mean": "[0.1307]", "input_std": "0.3081"},
        )
    assert response.status_code == 201, response.text
    return response.json()["id"]


pytest_plugins = ["tests.real_services"]
