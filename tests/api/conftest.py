from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from service.migrate import upgrade_to_head
from service.queue import InProcessJobQueue
from service.settings import Settings


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
