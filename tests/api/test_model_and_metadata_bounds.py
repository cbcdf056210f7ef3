"""Over HTTP on the embedded default: the upload's forward check runs only when its activations
are small, an activation record is checked against the teacher without its weights in the API,
lopes `samples` is bounded by the memory of the reconstructed set, and the registry's bounds are
published."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save
from torch import nn

from api.main import create_app
from core.datasets import LabelledImages
from core.metadata import metadata_bytes, record_metadata
from core.methods.lopes import surrogate_set_bytes
from core.models import build
from service.migrate import upgrade_to_head
from service.queue import InProcessJobQueue
from service.settings import Settings
from tests.memory import CLEAR_REFS, peak_rss, release_freed_memory, reset_peak_rss

MiB = 1024 * 1024
T = TypeVar("T")
needs_proc = pytest.mark.skipif(not CLEAR_REFS.exists(), reason="needs /proc/self/clear_refs")


def app_client(tmp_path: Path, **settings: object) -> TestClient:
    configured = Settings(data_dir=tmp_path / "data", **settings)
    configured.data_dir.mkdir(parents=True)
    upgrade_to_head(configured.resolved_database_url)
    return TestClient(create_app(configured, queue=InProcessJobQueue()))


@pytest.fixture
def big_client(tmp_path: Path) -> Iterator[TestClient]:
    with app_client(tmp_path, max_upload_bytes=128 * MiB) as client:
        yield client


def seeded(architecture: str, seed: int = 0, **kwargs: object) -> nn.Module:
    torch.manual_seed(seed)
    return build(architecture, **kwargs).eval()


def post_teacher(client: TestClient, model: nn.Module, architecture: str, kwargs: str) -> dict:
    response = client.post(
        "/v1/teachers",
        files={"file": ("t.safetensors", save(model.state_dict()))},
        data={"architecture": architecture, "architecture_kwargs": kwargs},
    )
    assert response.status_code == 201, response.text
    return response.json()


def record_for(model: nn.Module, shape: tuple[int, ...], record: str = "all_layers") -> bytes:
    images = torch.randn(40, *shape, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(40) % 10
    return metadata_bytes(record_metadata(model, LabelledImages(images, labels), record))


def measured(call: Callable[[], T]) -> tuple[T, int]:
    release_freed_memory()
    reset_peak_rss()
    start = peak_rss()
    result = call()
    return result, peak_rss() - start


@needs_proc
def test_the_forward_check_runs_only_when_its_activations_fit(tmp_path: Path) -> None:
    """WRN-10-1 at 256 px: a 300 KB file whose forward pass at batch 2 takes ~70 MB (estimated
    ~100 MB: under the default bound of 256 MiB, over a bound of 32 MiB)."""
    model = seeded("wrn", depth=10, in_channels=1, image_size=256)
    kwargs = '{"depth": 10, "in_channels": 1, "image_size": 256}'
    warm = seeded("wrn", depth=10, in_channels=1)  # loads the kernels before the measured upload
    with app_client(tmp_path / "small", forward_check_max_activation_bytes=32 * MiB) as client:
        post_teacher(client, warm, "wrn", '{"depth": 10, "in_channels": 1}')
        body, skipped = measured(lambda: post_teacher(client, model, "wrn", kwargs))
    assert body["input_shape"] == [1, 256, 256]
    with app_client(tmp_path / "default") as client:
        post_teacher(client, warm, "wrn", '{"depth": 10, "in_channels": 1}')
        _, checked = measured(lambda: post_teacher(client, model, "wrn", kwargs))
    print(f"FIGURE forward check skipped: +{skipped / MiB:.1f} MiB, run: +{checked / MiB:.1f} MiB")
    assert skipped < 16 * MiB, f"the API grew by {skipped / MiB:.0f} MiB with the check skipped"
    assert checked > 32 * MiB, "the forward check did not run under the default bound"


def test_put_metadata_warns_about_other_weights_and_refuses_other_layers(
    big_client: TestClient,
) -> None:
    shape = (1, 32, 32)
    model = seeded("lenet5")
    teacher = post_teacher(big_client, model, "lenet5", "{}")
    url = f"/v1/teachers/{teacher['id']}/metadata"

    same = big_client.put(url, files={"metadata": ("m", record_for(model, shape))})
    assert same.status_code == 200, same.text
    assert same.json()["metadata"]["warning"] is None
    assert same.json()["metadata"]["layers"][-1] == "classifier.3"

    other = big_client.put(url, files={"metadata": ("m", record_for(seeded("lenet5", 7), shape))})
    assert other.status_code == 200, other.text
    assert "different teacher weights" in other.json()["metadata"]["warning"]

    hinton = record_for(seeded("hinton800", image_size=32), shape)
    refused = big_client.put(url, files={"metadata": ("m", hinton)})
    assert refused.status_code == 422, refused.text
    assert "layers do not match" in refused.json()["error"]["message"]


@needs_proc
def test_put_metadata_never_loads_the_teacher_into_the_api(big_client: TestClient) -> None:
    """Hinton-1200 at 128 px: 84 MB of weights. The record is checked against the layers built
    on the meta device and the weights' fingerprint read from the stored file in chunks."""
    shape = (1, 128, 128)
    model = seeded("hinton1200", image_size=128)
    teacher = post_teacher(big_client, model, "hinton1200", '{"image_size": 128}')
    assert teacher["size_bytes"] > 80 * MiB
    record = record_for(model, shape)
    del model

    response, growth = measured(
        lambda: big_client.put(
            f"/v1/teachers/{teacher['id']}/metadata", files={"metadata": ("m", record)}
        )
    )
    assert response.status_code == 200, response.text
    assert response.json()["metadata"]["warning"] is None  # the streamed fingerprint matches
    assert growth < 24 * MiB, f"the API grew by {growth / MiB:.0f} MiB"


def test_lopes_samples_are_bounded_by_the_reconstructed_set(tmp_path: Path) -> None:
    limit = 8 * MiB
    with app_client(tmp_path, max_lopes_sample_bytes=limit) as client:
        model = seeded("lenet5")
        teacher = post_teacher(client, model, "lenet5", "{}")
        put = client.put(
            f"/v1/teachers/{teacher['id']}/metadata",
            files={"metadata": ("m", record_for(model, (1, 32, 32), "top_layer"))},
        )
        assert put.status_code == 200, put.text
        fitting = limit // surrogate_set_bytes(1, (1, 32, 32), 10)

        def lopes(samples: int) -> httpx.Response:
            return client.post(
                "/v1/jobs",
                json={
                    "teacher_id": teacher["id"],
                    "method": "lopes",
                    "student": {"architecture": "lenet5_half"},
                    "iterations": 100,
                    "hyperparameters": {"samples": samples},
                },
            )

        assert lopes(fitting).status_code == 202
        refused = lopes(fitting + 1)
    assert refused.status_code == 422, refused.text
    message = refused.json()["error"]["message"]
    assert f"at most {fitting} fit" in message
    assert "DFKD_MAX_LOPES_SAMPLE_BYTES" in message


def test_the_architectures_route_publishes_the_bounds(client: TestClient) -> None:
    items = {item["name"]: item for item in client.get("/v1/architectures").json()["items"]}
    assert items["wrn"]["bounds"]["depth"] == {"minimum": 10, "maximum": 100, "integer": True}
    assert items["wrn"]["bounds"]["image_size"]["maximum"] == 512
    assert items["lenet5"]["bounds"]["image_size"]["minimum"] == 16
    assert items["alexnet"]["bounds"]["width"]["integer"] is False
    assert all(set(item["kwargs"]) >= set(item["bounds"]) for item in items.values())
