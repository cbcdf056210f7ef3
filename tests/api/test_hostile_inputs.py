"""Every case of the hostile corpus (tests/hostile_corpus.py) gets a 4xx with a JSON error code and
message, never a 500; nothing is stored, no temporary file is left, no pickle runs, and claims of
huge tensors or arrays are refused without the memory they claim."""

from __future__ import annotations

import io
import pickle
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from api.main import create_app
from core.messages import MAX_MESSAGE_CHARS
from core.models import build, forward_peak_bytes
from service.auth import create_key, tenant_named
from service.db import make_engine, make_session_factory, session_scope
from service.migrate import upgrade_to_head
from service.queue import InProcessJobQueue
from service.quotas import set_overrides
from service.settings import Settings
from tests.hostile_corpus import CASES, Booby, Context, Hostile, good_weights, zip_of
from tests.memory import CLEAR_REFS, peak_rss, reset_peak_rss

LIMIT = 2 * 1024 * 1024
HUGE_CLAIM_HEADROOM = 64 * 1024 * 1024  # the claims are 80 MB to 40 TB


@dataclass(frozen=True)
class World:
    client: TestClient
    settings: Settings
    temp: Path  # every temporary file of this process goes here during the run
    ctx: Context


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The API on the embedded default (program teachers allowed, a 2 MiB cap), seeded with a
    teacher, a program teacher and a job so lists are not empty and ids are real."""
    root = tmp_path_factory.mktemp("hostile")
    temp = root / "tmp"
    temp.mkdir()
    settings = Settings(
        data_dir=root / "data",
        max_upload_bytes=LIMIT,
        allow_program_teachers=True,
        max_dataset_array_bytes=LIMIT // 2,
    )
    settings.data_dir.mkdir(parents=True)
    upgrade_to_head(settings.resolved_database_url)
    with session_scope(make_session_factory(make_engine(settings.resolved_database_url))) as s:
        _, other_key = create_key(s, "other", "ci")
        _, full_key = create_key(s, "full", "ci")
    # torch makes its inductor cache folder in the temp dir the first time a model runs on the
    # meta device (as the API sizes models): a folder of torch's, once per process, not an upload
    with torch.device("meta"):
        forward_peak_bytes(build("lenet5"), (1, 32, 32), 2)
    saved_tempdir = tempfile.tempdir
    tempfile.tempdir = str(temp)
    app = create_app(settings, queue=InProcessJobQueue())
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            teacher = client.post(
                "/v1/teachers",
                files={"file": ("t.safetensors", io.BytesIO(good_weights()))},
                data={"architecture": "lenet5"},
            )
            assert teacher.status_code == 201, teacher.text
            program = client.post(
                "/v1/teachers",
                files={"file": ("t.pt", io.BytesIO(zip_of({"model/code": b"x"})))},
                data={"format": "torchscript", "input_shape": "[1, 32, 32]", "num_classes": "10"},
            )
            assert program.status_code == 201, program.text
            job = client.post(
                "/v1/jobs",
                json={
                    "teacher_id": teacher.json()["id"],
                    "student": {"architecture": "lenet5_half"},
                    "iterations": 10,
                },
            )
            assert job.status_code == 202, job.text
            full_teacher = fill_quotas(client, settings, full_key)
            ctx = Context(
                marker=root / "pickle-ran",
                upload_limit=LIMIT,
                teacher_id=teacher.json()["id"],
                program_teacher_id=program.json()["id"],
                other_tenant_key=other_key,
                job_id=job.json()["id"],
                quota_tenant_key=full_key,
                quota_teacher_id=full_teacher,
            )
            yield World(client, settings, temp, ctx)
    finally:
        tempfile.tempdir = saved_tempdir


def fill_quotas(client: TestClient, settings: Settings, key: str) -> str:
    """The quota cases' tenant: a teacher and a queued job, then quotas of 1 job and of exactly
    the bytes it stores. Returns its teacher's id."""
    auth = {"authorization": f"Bearer {key}"}
    teacher = client.post(
        "/v1/teachers",
        files={"file": ("t.safetensors", io.BytesIO(good_weights()))},
        data={"architecture": "lenet5"},
        headers=auth,
    )
    assert teacher.status_code == 201, teacher.text
    body = {"teacher_id": teacher.json()["id"], "student": {"architecture": "lenet5_half"}}
    job = client.post("/v1/jobs", json=body | {"iterations": 10}, headers=auth)
    assert job.status_code == 202, job.text
    with session_scope(make_session_factory(make_engine(settings.resolved_database_url))) as s:
        tenant = tenant_named(s, "full")
        set_overrides(tenant, max_active_jobs=1, max_storage_bytes=teacher.json()["size_bytes"])
    return teacher.json()["id"]


def send(client: TestClient, hostile: Hostile) -> httpx.Response:
    return client.request(
        hostile.method,
        hostile.path,
        files={
            name: (filename, io.BytesIO(content))
            for name, (filename, content) in hostile.files.items()
        }
        if hostile.files is not None
        else None,
        data=hostile.data,
        content=hostile.content,
        json=hostile.json_body,
        headers=hostile.headers,
    )


def stored(world: World) -> dict[str, object]:
    """What the service holds: every list and every blob file with its size."""
    lists = {
        path: [item["id"] for item in world.client.get(f"{path}?limit=200").json()["items"]]
        for path in ("/v1/teachers", "/v1/datasets", "/v1/jobs")
    }
    blobs = {
        str(path.relative_to(world.settings.blob_dir)): path.stat().st_size
        for path in world.settings.blob_dir.rglob("*")
        if path.is_file()
    }
    return {"lists": lists, "blobs": blobs}


def test_the_booby_trapped_pickle_really_runs_code(tmp_path: Path) -> None:
    """Without this, 'the marker was not created' would prove nothing."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Booby(marker))).close()  # our own bytes, made just above
    assert marker.exists()


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_gets_a_clear_4xx_and_nothing_is_kept(world: World, name: str) -> None:
    hostile = CASES[name](world.ctx)
    before = stored(world)
    measure = hostile.huge_claim and CLEAR_REFS.exists()
    if measure:
        reset_peak_rss()
        start = peak_rss()
    response = send(world.client, hostile)
    growth = peak_rss() - start if measure else 0

    assert response.status_code == hostile.status, response.text
    assert response.headers["content-type"] == "application/json", response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == hostile.code, error
    assert len(error["message"]) >= 10, error
    assert len(error["message"]) <= MAX_MESSAGE_CHARS, "the message repeats a long input"
    assert len(response.content) < 16 * 1024, "the answer repeats a long input"
    assert hostile.fragment in error["message"], error
    if hostile.status == 429:  # a quota: the client is told when to try again
        assert int(response.headers["retry-after"]) > 0
    assert stored(world) == before
    assert list(world.temp.iterdir()) == [], "a temporary file was left behind"
    if hostile.runs_code:
        assert not world.ctx.marker.exists(), "an uploaded pickle was unpickled"
    if measure:
        assert growth < HUGE_CLAIM_HEADROOM, f"peak RSS grew by {growth} bytes"
