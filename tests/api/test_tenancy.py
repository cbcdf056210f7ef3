"""API keys, tenant isolation and idempotency, on the embedded default."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from service.auth import create_key, revoke_key
from service.db import make_engine, make_session_factory, session_scope
from service.queue import InProcessJobQueue
from service.settings import Settings
from tests.processes import DFKD


@pytest.fixture
def keys(settings: Settings) -> dict[str, str]:
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    with session_scope(sessions) as session:
        _, alice = create_key(session, "alice", "ci")
        _, bob = create_key(session, "bob", "ci")
        revoked, old = create_key(session, "alice", "old")
        revoke_key(session, revoked.id)
    return {"alice": alice, "bob": bob, "revoked": old}


@pytest.fixture
def locked(settings: Settings) -> Iterator[TestClient]:
    with TestClient(
        create_app(
            settings.model_copy(update={"require_api_keys": True}), queue=InProcessJobQueue()
        )
    ) as client:
        yield client


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upload_teacher(client: TestClient, key: str, teacher_file: Path, **headers: str) -> dict:
    with teacher_file.open("rb") as handle:
        response = client.post(
            "/v1/teachers",
            files={"file": ("t.safetensors", handle)},
            data={"architecture": "lenet5"},
            headers=auth(key) | headers,
        )
    assert response.status_code == 201, response.text
    return response.json()


def job_body(teacher_id: str, seed: int = 0) -> dict:
    return {
        "teacher_id": teacher_id,
        "student": {"architecture": "lenet5_half"},
        "iterations": 10,
        "seed": seed,
    }


def test_requests_without_a_valid_key_are_401(locked: TestClient, keys: dict[str, str]) -> None:
    missing = locked.get("/v1/jobs")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
    assert missing.headers["www-authenticate"] == "Bearer"
    for key in ("dfkd_made-up", keys["revoked"]):
        response = locked.get("/v1/jobs", headers=auth(key))
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert locked.get("/v1/jobs", headers=auth(keys["alice"])).status_code == 200
    assert locked.get("/healthz").status_code == 200  # probes need no key


def test_tenants_never_see_each_others_objects(
    locked: TestClient, keys: dict[str, str], teacher_file: Path
) -> None:
    alice, bob = auth(keys["alice"]), auth(keys["bob"])
    teacher = upload_teacher(locked, keys["alice"], teacher_file)
    job = locked.post("/v1/jobs", json=job_body(teacher["id"]), headers=alice).json()
    buffer = io.BytesIO()
    np.savez(buffer, images=np.zeros((2, 1, 32, 32), np.uint8), labels=np.arange(2))
    dataset = locked.post(
        "/v1/datasets", files={"file": ("d.npz", buffer.getvalue())}, headers=alice
    ).json()

    for path in (
        f"/v1/teachers/{teacher['id']}",
        f"/v1/datasets/{dataset['id']}",
        f"/v1/jobs/{job['id']}",
        f"/v1/jobs/{job['id']}/metrics",
        f"/v1/jobs/{job['id']}/student",
        f"/v1/jobs/{job['id']}/samples",
        f"/v1/jobs/{job['id']}/report",
    ):
        assert locked.get(path, headers=bob).status_code == 404, path
        assert locked.get(path, headers=alice).status_code in {200, 409}, path
    assert locked.post(f"/v1/jobs/{job['id']}/cancel", headers=bob).status_code == 404
    for listing in ("/v1/teachers", "/v1/datasets", "/v1/jobs"):
        assert locked.get(listing, headers=bob).json()["items"] == []
        assert len(locked.get(listing, headers=alice).json()["items"]) == 1
    stolen = locked.post("/v1/jobs", json=job_body(teacher["id"]), headers=bob)
    assert stolen.status_code == 422 and stolen.json()["error"]["code"] == "teacher_not_found"
    own_teacher = upload_teacher(locked, keys["bob"], teacher_file)
    borrowed = locked.post(
        "/v1/jobs",
        json=job_body(own_teacher["id"]) | {"evaluation_dataset_id": dataset["id"]},
        headers=bob,
    )
    assert borrowed.status_code == 422 and borrowed.json()["error"]["code"] == "dataset_not_found"


def test_idempotent_job_creation(
    locked: TestClient, keys: dict[str, str], teacher_file: Path
) -> None:
    alice, bob = auth(keys["alice"]), auth(keys["bob"])
    teacher = upload_teacher(locked, keys["alice"], teacher_file)
    first = locked.post(
        "/v1/jobs", json=job_body(teacher["id"]), headers=alice | {"Idempotency-Key": "k1"}
    )
    again = locked.post(
        "/v1/jobs", json=job_body(teacher["id"]), headers=alice | {"Idempotency-Key": "k1"}
    )
    assert first.status_code == again.status_code == 202
    assert (
        again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    )
    conflict = locked.post(
        "/v1/jobs", json=job_body(teacher["id"], seed=5), headers=alice | {"Idempotency-Key": "k1"}
    )
    assert (
        conflict.status_code == 409 and conflict.json()["error"]["code"] == "idempotency_conflict"
    )
    assert len(locked.get("/v1/jobs", headers=alice).json()["items"]) == 1
    # keys are per tenant: bob's k1 is his own
    bob_teacher = upload_teacher(locked, keys["bob"], teacher_file)
    bobs = locked.post(
        "/v1/jobs", json=job_body(bob_teacher["id"]), headers=bob | {"Idempotency-Key": "k1"}
    )
    assert bobs.status_code == 202 and bobs.json()["id"] != first.json()["id"]


def test_idempotent_teacher_upload(
    locked: TestClient, keys: dict[str, str], teacher_file: Path
) -> None:
    first = upload_teacher(locked, keys["alice"], teacher_file, **{"Idempotency-Key": "t1"})
    again = upload_teacher(locked, keys["alice"], teacher_file, **{"Idempotency-Key": "t1"})
    assert again["id"] == first["id"]
    with teacher_file.open("rb") as handle:
        conflict = locked.post(
            "/v1/teachers",
            files={"file": ("t.safetensors", handle)},
            data={"architecture": "lenet5", "name": "other"},
            headers=auth(keys["alice"]) | {"Idempotency-Key": "t1"},
        )
    assert conflict.status_code == 409
    assert len(locked.get("/v1/teachers", headers=auth(keys["alice"])).json()["items"]) == 1


def test_keys_cli_creates_lists_and_revokes(settings: Settings) -> None:
    env = {"DFKD_DATA_DIR": str(settings.data_dir), "PATH": ""}

    def dfkd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DFKD, "keys", *args], env=env, capture_output=True, text=True, timeout=60
        )

    created = json.loads(dfkd("create", "--tenant", "carol", "--name", "laptop").stdout)
    assert created["key"].startswith("dfkd_") and created["tenant"] == "carol"
    listed = [json.loads(line) for line in dfkd("list", "--tenant", "carol").stdout.splitlines()]
    assert listed == [listed[0]] and listed[0]["state"] == "active" and "key" not in listed[0]
    assert dfkd("revoke", created["id"]).returncode == 0
    assert json.loads(dfkd("list", "--tenant", "carol").stdout)["state"] == "revoked"
    assert dfkd("revoke", created["id"]).returncode == 1
    with TestClient(create_app(settings.model_copy(update={"require_api_keys": True}))) as client:
        assert client.get("/v1/jobs", headers=auth(created["key"])).status_code == 401
