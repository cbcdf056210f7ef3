"""Tenant quotas over HTTP on the embedded default (SQLite, local folder): 429 with Retry-After,
a code naming the quota, its limit and the use; per-tenant overrides by `dfkd tenants`."""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from service.auth import create_key, tenant_named
from service.db import make_engine, make_session_factory, session_scope
from service.queue import InProcessJobQueue
from service.quotas import set_overrides
from service.settings import Settings
from tests.processes import DFKD


def open_client(settings: Settings, **limits: int) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=limits), queue=InProcessJobQueue()))


def job_body(teacher_id: str, seed: int = 0) -> dict:
    return {
        "teacher_id": teacher_id,
        "student": {"architecture": "lenet5_half"},
        "iterations": 10,
        "seed": seed,
    }


def upload_teacher(client: TestClient, teacher_file: Path, **headers: str) -> httpx.Response:
    with teacher_file.open("rb") as handle:
        return client.post(
            "/v1/teachers",
            files={"file": ("t.safetensors", handle)},
            data={"architecture": "lenet5"},
            headers=headers,
        )


def npz_dataset() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, images=np.zeros((2, 1, 32, 32), np.uint8), labels=np.arange(2))
    return buffer.getvalue()


def assert_refused(response: httpx.Response, code: str, limit: int, current: int) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) > 0
    error = response.json()["error"]
    assert error["code"] == code
    assert error["details"][0]["limit"] == limit and error["details"][0]["current"] == current
    assert f"quota of {limit} " in error["message"] and f"{current} in use" in error["message"]
    assert "dfkd tenants set-quota" in error["message"]


def blob_files(settings: Settings) -> list[str]:
    root = settings.blob_dir
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_active_jobs_past_the_quota_get_429_until_one_ends(
    settings: Settings, teacher_file: Path
) -> None:
    with open_client(settings, tenant_max_active_jobs=2) as client:
        teacher = upload_teacher(client, teacher_file).json()["id"]
        first = client.post("/v1/jobs", json=job_body(teacher), headers={"Idempotency-Key": "a"})
        second = client.post("/v1/jobs", json=job_body(teacher, seed=1))
        assert first.status_code == second.status_code == 202
        third = client.post("/v1/jobs", json=job_body(teacher, seed=2))
        assert_refused(third, "quota_active_jobs", limit=2, current=2)
        assert "active jobs (queued + running)" in third.json()["error"]["message"]
        # a retry of an accepted job is the same job, not one more
        again = client.post("/v1/jobs", json=job_body(teacher), headers={"Idempotency-Key": "a"})
        assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
        assert len(client.get("/v1/jobs").json()["items"]) == 2
        # a bad body is still told what is wrong with it first
        bad = client.post("/v1/jobs", json=job_body("tch_nope"))
        assert bad.status_code == 422
        assert client.post(f"/v1/jobs/{second.json()['id']}/cancel").status_code == 202
        assert client.post("/v1/jobs", json=job_body(teacher, seed=2)).status_code == 202


def test_uploads_past_the_storage_quota_get_429_and_store_nothing(
    settings: Settings, teacher_file: Path
) -> None:
    size = teacher_file.stat().st_size
    with open_client(settings, tenant_max_storage_bytes=size + 100) as client:
        teacher = upload_teacher(client, teacher_file)
        assert teacher.status_code == 201
        stored = blob_files(settings)
        assert_refused(upload_teacher(client, teacher_file), "quota_storage", size + 100, size)
        dataset = client.post("/v1/datasets", files={"file": ("d.npz", npz_dataset())})
        assert_refused(dataset, "quota_storage", size + 100, size)
        assert dataset.json()["error"]["details"][0]["requested"] == len(npz_dataset())
        # refused before the record is read: junk bytes get the 429, not a 422
        record = client.put(
            f"/v1/teachers/{teacher.json()['id']}/metadata",
            files={"metadata": ("m.safetensors", b"x" * 200)},
        )
        assert_refused(record, "quota_storage", size + 100, size)
        assert blob_files(settings) == stored
        assert len(client.get("/v1/teachers").json()["items"]) == 1
        assert client.get("/v1/datasets").json()["items"] == []
        # at its storage quota (not over it) a tenant still starts jobs
        assert client.post("/v1/jobs", json=job_body(teacher.json()["id"])).status_code == 202
    with open_client(settings, tenant_max_storage_bytes=size - 1) as client:  # lowered below use
        # jobs write outputs: none start while the tenant is over its storage
        over = client.post("/v1/jobs", json=job_body(teacher.json()["id"], seed=1))
        assert_refused(over, "quota_storage", size - 1, size)


@pytest.fixture
def keys(settings: Settings) -> Iterator[dict[str, str]]:
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    with session_scope(sessions) as session:
        _, alice = create_key(session, "alice", "ci")
        _, bob = create_key(session, "bob", "ci")
    yield {"alice": f"Bearer {alice}", "bob": f"Bearer {bob}"}


def test_a_tenants_override_is_its_own(
    settings: Settings, teacher_file: Path, keys: dict[str, str]
) -> None:
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    with session_scope(sessions) as session:
        set_overrides(tenant_named(session, "alice"), max_active_jobs=0)  # unlimited
    with open_client(settings, tenant_max_active_jobs=1) as client:
        alice, bob = {"Authorization": keys["alice"]}, {"Authorization": keys["bob"]}
        alices = upload_teacher(client, teacher_file, **alice).json()["id"]
        bobs = upload_teacher(client, teacher_file, **bob).json()["id"]
        for seed in range(3):
            assert client.post("/v1/jobs", json=job_body(alices, seed), headers=alice).is_success
        assert client.post("/v1/jobs", json=job_body(bobs), headers=bob).status_code == 202
        refused = client.post("/v1/jobs", json=job_body(bobs, 1), headers=bob)
        assert_refused(refused, "quota_active_jobs", limit=1, current=1)  # alice's 3 not counted


def test_tenants_command_lists_sets_and_clears_overrides(
    settings: Settings, teacher_file: Path, keys: dict[str, str]
) -> None:
    env = {
        "DFKD_DATA_DIR": str(settings.data_dir),
        "DFKD_TENANT_MAX_ACTIVE_JOBS": "1",
        "PATH": "",
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),  # the checkout under test
    }

    def dfkd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DFKD, "tenants", *args], env=env, capture_output=True, text=True, timeout=60
        )

    def bob() -> dict:
        listed = dfkd("list", "--tenant", "bob")
        assert listed.returncode == 0, listed.stderr
        return json.loads(listed.stdout)

    with open_client(settings) as client:
        upload_teacher(client, teacher_file, Authorization=keys["bob"])
    size = teacher_file.stat().st_size
    assert bob()["limits"] == {"max_active_jobs": 1, "max_storage_bytes": None}
    assert bob()["use"] == {"active_jobs": 0, "storage_bytes": size}
    everyone = [json.loads(line)["tenant"] for line in dfkd("list").stdout.splitlines()]
    assert everyone == ["default", "alice", "bob"]
    set_quota = dfkd("set-quota", "--tenant", "bob", "--max-active-jobs", "3")
    assert set_quota.returncode == 0, set_quota.stderr
    dfkd("set-quota", "--tenant", "bob", "--max-storage-bytes", "0")  # unlimited
    assert bob()["overrides"] == {"max_active_jobs": 3, "max_storage_bytes": 0}
    assert bob()["limits"] == {"max_active_jobs": 3, "max_storage_bytes": None}
    assert dfkd("clear", "--tenant", "bob", "--max-storage-bytes").returncode == 0
    assert bob()["overrides"] == {"max_active_jobs": 3, "max_storage_bytes": None}
    assert dfkd("clear", "--tenant", "bob").returncode == 0
    assert bob()["overrides"] == {"max_active_jobs": None, "max_storage_bytes": None}
    unknown = dfkd("set-quota", "--tenant", "nobody", "--max-active-jobs", "1")
    assert unknown.returncode == 1 and "dfkd keys create --tenant nobody" in unknown.stderr
    negative = dfkd("set-quota", "--tenant", "bob", "--max-active-jobs", "-1")
    assert negative.returncode == 2 and "0 (unlimited) or more" in negative.stderr
