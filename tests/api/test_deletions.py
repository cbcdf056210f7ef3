"""DELETE of teachers, datasets and jobs on the embedded default (SQLite, local folder): 204 then
404, no file of the object left in the folder, the cascade, tenancy, and the deletion records."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.auth import create_key
from service.blob_keys import (
    checkpoint_key,
    samples_key,
    student_export_key,
    student_key,
    transition_curves_key,
)
from service.db import make_engine, make_session_factory, session_scope
from service.models import Deletion, JobEvent, MetricPoint
from service.settings import Settings
from worker.context import make_context
from worker.job import run_job


def job_body(teacher_id: str, **overrides: object) -> dict:
    return {
        "teacher_id": teacher_id,
        "student": {"architecture": "lenet5_half"},
        "iterations": 20,
        "batch_size": 8,
        "hyperparameters": {"generator_width": 8},
    } | overrides


def files_under(settings: Settings, object_id: str) -> list[str]:
    """Every file in the blob folder whose path names the object, found by walking the folder
    (not through the store under test)."""
    return sorted(
        path.relative_to(settings.blob_dir).as_posix()
        for path in settings.blob_dir.rglob("*")
        if path.is_file() and object_id in path.as_posix()
    )


def give_job_files(client: TestClient, job_id: str) -> None:
    """The files a finished job leaves: checkpoint, samples, students in every format, plot."""
    blobs = client.app.state.blobs
    for key in (
        checkpoint_key(job_id),
        samples_key(job_id, 10),
        samples_key(job_id, 20),
        student_key(job_id),
        student_export_key(job_id, "onnx"),
        student_export_key(job_id, "torchscript"),
        transition_curves_key(job_id),
    ):
        blobs.put_bytes(key, b"x")


def records(settings: Settings) -> list[Deletion]:
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    with sessions() as session:
        return list(session.scalars(select(Deletion).order_by(Deletion.id)))


def upload_dataset(client: TestClient, headers: dict[str, str] | None = None) -> str:
    buffer = io.BytesIO()
    images = np.random.default_rng(0).integers(0, 255, (20, 1, 32, 32), dtype=np.uint8)
    np.savez(buffer, images=images, labels=np.arange(20) % 10)
    response = client.post(
        "/v1/datasets", files={"file": ("d.npz", buffer.getvalue())}, headers=headers or {}
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_a_queued_job_is_cancelled_and_deleted_with_every_file_then_404(
    client: TestClient, settings: Settings, teacher_id: str
) -> None:
    job_id = client.post("/v1/jobs", json=job_body(teacher_id)).json()["id"]
    give_job_files(client, job_id)
    assert len(files_under(settings, job_id)) == 7

    response = client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert client.get(f"/v1/jobs/{job_id}/events").status_code == 404
    assert files_under(settings, job_id) == []
    again = client.delete(f"/v1/jobs/{job_id}")
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"
    # the teacher and its files stay
    assert client.get(f"/v1/teachers/{teacher_id}").status_code == 200
    assert files_under(settings, teacher_id)

    [record] = client.get("/v1/deletions").json()["items"]
    assert record["kind"] == "job" and record["object_id"] == job_id
    assert record["state"] == "deleted" and record["reason"] == "request"
    assert record["blobs_deleted"] == 7 and record["key_id"] is None
    assert record["completed_at"] >= record["requested_at"]
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    with sessions() as session:  # its events and metrics went with it
        assert session.scalars(select(JobEvent).where(JobEvent.job_id == job_id)).first() is None
        assert session.scalars(select(MetricPoint)).first() is None


def test_deleting_a_teacher_deletes_its_jobs_and_every_file(
    client: TestClient, settings: Settings, teacher_id: str
) -> None:
    jobs = [client.post("/v1/jobs", json=job_body(teacher_id, seed=s)).json()["id"] for s in (1, 2)]
    for job_id in jobs:
        give_job_files(client, job_id)
    client.post(f"/v1/jobs/{jobs[1]}/cancel")
    assert files_under(settings, teacher_id) == [f"teachers/{teacher_id}/weights.safetensors"]

    assert client.delete(f"/v1/teachers/{teacher_id}").status_code == 204
    assert client.get(f"/v1/teachers/{teacher_id}").status_code == 404
    for job_id in jobs:
        assert client.get(f"/v1/jobs/{job_id}").status_code == 404
        assert files_under(settings, job_id) == []
    assert files_under(settings, teacher_id) == []
    assert [p for p in settings.blob_dir.rglob("*") if p.is_file()] == []  # nothing else was
    assert client.delete(f"/v1/teachers/{teacher_id}").status_code == 404

    kinds = {(r.kind, r.object_id, r.reason) for r in records(settings)}
    assert kinds == {("teacher", teacher_id, "request")} | {
        ("job", job_id, "cascade") for job_id in jobs
    }
    assert all(r.completed_at is not None for r in records(settings))
    refused = client.post("/v1/jobs", json=job_body(teacher_id))
    assert refused.json()["error"]["code"] == "teacher_not_found"


def test_a_dataset_in_use_is_409_naming_the_jobs_then_deletable(
    client: TestClient, settings: Settings, teacher_id: str
) -> None:
    dataset_id = upload_dataset(client)
    job_id = client.post(
        "/v1/jobs", json=job_body(teacher_id, evaluation_dataset_id=dataset_id)
    ).json()["id"]

    refused = client.delete(f"/v1/datasets/{dataset_id}")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "dataset_in_use"
    assert job_id in refused.json()["error"]["message"]
    assert client.get(f"/v1/datasets/{dataset_id}").status_code == 200
    assert files_under(settings, dataset_id)

    client.post(f"/v1/jobs/{job_id}/cancel")
    assert client.delete(f"/v1/datasets/{dataset_id}").status_code == 204
    assert client.get(f"/v1/datasets/{dataset_id}").status_code == 404
    assert files_under(settings, dataset_id) == []
    ended = client.get(f"/v1/jobs/{job_id}").json()  # the finished job stays, without the link
    assert ended["status"] == "cancelled" and ended["evaluation_dataset_id"] is None
    assert client.delete(f"/v1/datasets/{dataset_id}").status_code == 404


def test_another_tenant_gets_404_and_nothing_is_deleted(
    client: TestClient, settings: Settings, teacher_id: str
) -> None:
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    with session_scope(sessions) as session:
        key, bob = create_key(session, "bob", "ci")
    bob_headers = {"Authorization": f"Bearer {bob}"}
    job_id = client.post("/v1/jobs", json=job_body(teacher_id)).json()["id"]
    give_job_files(client, job_id)
    dataset_id = upload_dataset(client)
    before = sorted(p.as_posix() for p in settings.blob_dir.rglob("*") if p.is_file())

    for path in (f"jobs/{job_id}", f"teachers/{teacher_id}", f"datasets/{dataset_id}"):
        response = client.delete(f"/v1/{path}", headers=bob_headers)
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "not_found"
    assert sorted(p.as_posix() for p in settings.blob_dir.rglob("*") if p.is_file()) == before
    assert client.get(f"/v1/jobs/{job_id}").status_code == 200
    assert records(settings) == []

    # bob deletes his own dataset: the record names his key, and only he sees it
    own = upload_dataset(client, bob_headers)
    assert client.delete(f"/v1/datasets/{own}", headers=bob_headers).status_code == 204
    [record] = client.get("/v1/deletions", headers=bob_headers).json()["items"]
    assert record["object_id"] == own and record["key_id"] == key.id
    assert client.get("/v1/deletions").json()["items"] == []


@pytest.mark.parametrize("path", ["jobs", "teachers", "datasets"])
def test_unknown_ids_are_404(client: TestClient, path: str) -> None:
    response = client.delete(f"/v1/{path}/nope")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


@pytest.fixture(autouse=True)
def _quiet_threads() -> None:
    import torch

    torch.set_num_threads(2)


def test_a_running_job_is_cancelled_then_deleted_once_it_stopped(
    client: TestClient, settings: Settings, teacher_id: str
) -> None:
    """The job function runs (as in a worker); DELETE answers 202 with the pending deletion, the
    job stops at its next check, and the worker that ran it finishes the deletion."""
    job_id = client.post(
        "/v1/jobs",
        json=job_body(
            teacher_id,
            iterations=100_000,
            checkpoint_every=5,
            sample_every=5,
            hyperparameters={"generator_width": 8, "student_steps": 1, "log_every": 1},
        ),
    ).json()["id"]
    runner = threading.Thread(target=run_job, args=(job_id, make_context(settings)))
    runner.start()
    deadline = time.monotonic() + 120
    while client.get(f"/v1/jobs/{job_id}").json()["progress"]["iteration"] < 10:
        assert time.monotonic() < deadline, "the job never got going"
        time.sleep(0.2)
    assert any(path.endswith("checkpoint.pt") for path in files_under(settings, job_id))

    pending = client.delete(f"/v1/jobs/{job_id}")
    assert pending.status_code == 202, pending.text
    body = pending.json()
    assert body["state"] == "pending" and body["waiting_for"] == [job_id]
    assert body["kind"] == "job" and body["completed_at"] is None
    assert client.delete(f"/v1/jobs/{job_id}").json()["id"] == body["id"]  # same deletion

    runner.join(60)
    assert not runner.is_alive()
    assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert files_under(settings, job_id) == []
    [record] = client.get("/v1/deletions").json()["items"]
    assert record["state"] == "deleted" and record["blobs_deleted"] >= 2


def test_a_teacher_with_a_running_job_goes_when_the_job_has_stopped(
    client: TestClient, settings: Settings, teacher_id: str
) -> None:
    job_id = client.post(
        "/v1/jobs",
        json=job_body(
            teacher_id,
            iterations=100_000,
            hyperparameters={"generator_width": 8, "student_steps": 1, "log_every": 1},
        ),
    ).json()["id"]
    runner = threading.Thread(target=run_job, args=(job_id, make_context(settings)))
    runner.start()
    deadline = time.monotonic() + 120
    while client.get(f"/v1/jobs/{job_id}").json()["progress"]["iteration"] < 3:
        assert time.monotonic() < deadline, "the job never got going"
        time.sleep(0.2)

    pending = client.delete(f"/v1/teachers/{teacher_id}")
    assert pending.status_code == 202, pending.text
    assert pending.json()["waiting_for"] == [job_id]
    new_job = client.post("/v1/jobs", json=job_body(teacher_id))
    assert new_job.status_code == 422
    assert new_job.json()["error"]["code"] == "teacher_being_deleted"

    runner.join(60)
    assert client.get(f"/v1/teachers/{teacher_id}").status_code == 404
    assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert files_under(settings, teacher_id) == [] and files_under(settings, job_id) == []
    states = {r["object_id"]: r["state"] for r in client.get("/v1/deletions").json()["items"]}
    assert states == {teacher_id: "deleted", job_id: "deleted"}
