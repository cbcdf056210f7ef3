from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.queue import QueueUnavailableError


def job_body(teacher: str, **overrides: object) -> dict:
    return {
        "teacher_id": teacher,
        "method": "zskt",
        "student": {"architecture": "lenet5_half", "kwargs": {}},
        "iterations": 50,
        "batch_size": 64,
        "seed": 1,
        "hyperparameters": {"generator_width": 32},
    } | overrides


def test_job_is_accepted_with_paper_defaults_filled_in(client: TestClient, teacher_id: str) -> None:
    """A job names its length (the paper's 80 000 iterations here) and nothing else."""
    response = client.post(
        "/v1/jobs",
        json={
            "teacher_id": teacher_id,
            "student": {"architecture": "lenet5_half"},
            "iterations": 80_000,
        },
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued" and job["method"] == "zskt"
    assert job["iterations"] == 80_000 and job["batch_size"] == 128
    assert job["budget_seconds"] is None
    assert job["hyperparameters"] | {} == {
        "z_dim": 100,
        "generator_steps": 1,
        "student_steps": 10,
        "lr_generator": 1e-3,
        "lr_student": 2e-3,
        "beta": 2500.0,
        "temperature": 1.0,
        "grad_clip": 50.0,  # 5 x C: the released clip at the batchmean scale
        "generator_width": 32,  # a CPU worker (embedded default here); 128 on a GPU
        "attention": True,
        "log_every": 10,
    }
    assert job["student"]["kwargs"] == {"num_classes": 10, "in_channels": 1, "image_size": 32}
    assert job["progress"] == {
        "iteration": 0,
        "total": 80_000,
        "fraction": 0.0,
        "samples_per_second": None,
        "eta_seconds": None,
        "flops_per_second": None,
        "utilisation": None,
        "peak_rss_bytes": None,
    }
    assert job["links"]["student"] is None


def test_jobs_are_listed_newest_first_with_cursor_pages(
    client: TestClient, teacher_id: str
) -> None:
    ids = [
        client.post("/v1/jobs", json=job_body(teacher_id, seed=seed)).json()["id"]
        for seed in range(5)
    ]
    first = client.get("/v1/jobs", params={"limit": 2}).json()
    assert [job["id"] for job in first["items"]] == ids[::-1][:2] and first["has_more"]
    second = client.get("/v1/jobs", params={"limit": 2, "after": first["next_cursor"]}).json()
    third = client.get("/v1/jobs", params={"limit": 2, "after": second["next_cursor"]}).json()
    assert [job["id"] for job in second["items"] + third["items"]] == ids[::-1][2:]
    assert third["has_more"] is False and third["next_cursor"] is None
    assert client.get("/v1/jobs", params={"status": "running"}).json()["items"] == []
    refused = client.get("/v1/jobs", params={"after": "not-a-cursor"})
    assert refused.status_code == 422 and "after" in refused.json()["error"]["message"]


@pytest.mark.parametrize(
    ("overrides", "code", "fragment"),
    [
        ({"method": "magic"}, "validation_error", "method"),
        ({"colour": "blue"}, "validation_error", "colour"),
        ({"hyperparameters": {"lr_studnet": 0.1}}, "validation_error", "lr_studnet"),
        ({"hyperparameters": {"lr_student": -1}}, "validation_error", "lr_student"),
        ({"iterations": 0}, "validation_error", "iterations"),
        ({"batch_size": 1}, "validation_error", "batch_size"),
        ({"student": {"architecture": "resnet9000"}}, "invalid_architecture", "resnet9000"),
        (
            {"student": {"architecture": "lenet5_half", "kwargs": {"depth": 3}}},
            "invalid_architecture",
            "depth",
        ),
        (
            {"student": {"architecture": "lenet5_half", "kwargs": {"in_channels": 3}}},
            "shape_mismatch",
            "[3, 32, 32]",
        ),
        (
            {"student": {"architecture": "lenet5_half", "kwargs": {"num_classes": 7}}},
            "shape_mismatch",
            "7 classes",
        ),
        ({"student": {"architecture": "lenet5_half", "extra": 1}}, "validation_error", "extra"),
        ({"teacher_id": "tch_missing"}, "teacher_not_found", "tch_missing"),
    ],
)
def test_bad_job_specs_are_422_with_a_clear_message(
    client: TestClient, teacher_id: str, overrides: dict, code: str, fragment: str
) -> None:
    response = client.post("/v1/jobs", json=job_body(teacher_id, **overrides))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert fragment in error["message"]
    assert client.get("/v1/jobs").json()["items"] == []


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


def test_unknown_job_is_404_everywhere(client: TestClient) -> None:
    for path in ("/v1/jobs/job_nope", "/v1/jobs/job_nope/metrics", "/v1/jobs/job_nope/student"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"


def test_student_of_an_unfinished_job_is_409(client: TestClient, teacher_id: str) -> None:
    job = client.post("/v1/jobs", json=job_body(teacher_id)).json()
    response = client.get(f"/v1/jobs/{job['id']}/student")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "student_not_ready"


def test_cancel_of_a_queued_job_ends_it_and_a_second_cancel_is_409(
    client: TestClient, teacher_id: str
) -> None:
    job = client.post("/v1/jobs", json=job_body(teacher_id)).json()
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    again = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"


class BrokerDown:
    def enqueue(self, job_id: str) -> None:
        raise QueueUnavailableError("the broker refused the connection")


def test_a_job_the_broker_never_got_is_503_and_stays_failed(
    client: TestClient, teacher_id: str
) -> None:
    client.app.state.queue = BrokerDown()
    response = client.post("/v1/jobs", json=job_body(teacher_id))
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "broker_unavailable"
    assert error["message"].startswith("the broker refused the connection; the job was not started")
    [job] = client.get("/v1/jobs").json()["items"]
    assert job["status"] == "failed" and job["error"] == error
    assert job["finished_at"] is not None
    cancel = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert (
        cancel.status_code == 409 and "already ended as failed" in cancel.json()["error"]["message"]
    )


def _dataset(client: TestClient, images: np.ndarray, labels: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, images=images, labels=labels)
    response = client.post("/v1/datasets", files={"file": ("d.npz", buffer.getvalue())})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_datasets_must_fit_the_teacher(client: TestClient, teacher_id: str) -> None:
    fitting = _dataset(client, np.zeros((4, 1, 32, 32), np.uint8), np.arange(4))
    fitting_too = _dataset(client, np.ones((4, 1, 32, 32), np.uint8), np.arange(4))
    wrong_size = _dataset(client, np.zeros((4, 28, 28), np.uint8), np.arange(4))
    wrong_labels = _dataset(client, np.zeros((4, 1, 32, 32), np.uint8), np.array([0, 1, 2, 12]))
    accepted = client.post(
        "/v1/jobs",
        json=job_body(teacher_id, evaluation_dataset_id=fitting, few_shot_dataset_id=fitting_too),
    )
    assert accepted.status_code == 202, accepted.text
    # the report would score the student on the images it was fine-tuned on
    same = client.post(
        "/v1/jobs",
        json=job_body(teacher_id, evaluation_dataset_id=fitting, few_shot_dataset_id=fitting),
    )
    assert same.status_code == 422, same.text
    message = same.json()["error"]["message"]
    assert "evaluation_dataset_id" in message and "few_shot_dataset_id" in message
    assert (
        accepted.json()["evaluation_dataset_id"] == fitting
        and accepted.json()["few_shot_per_class"] == 100
    )
    for field, dataset_id, code, fragment in (
        ("evaluation_dataset_id", "dst_missing", "dataset_not_found", "dst_missing"),
        ("evaluation_dataset_id", wrong_size, "dataset_mismatch", "[1, 28, 28]"),
        ("few_shot_dataset_id", wrong_labels, "dataset_mismatch", "label 12"),
    ):
        response = client.post("/v1/jobs", json=job_body(teacher_id, **{field: dataset_id}))
        assert response.status_code == 422, response.text
        assert (
            response.json()["error"]["code"] == code
            and fragment in response.json()["error"]["message"]
        )


def test_samples_and_report_of_a_new_job(client: TestClient, teacher_id: str) -> None:
    job = client.post("/v1/jobs", json=job_body(teacher_id)).json()
    assert client.get(job["links"]["samples"]).json() == {"items": []}
    assert client.get(f"/v1/jobs/{job['id']}/samples/10").status_code == 404
    report = client.get(f"/v1/jobs/{job['id']}/report")
    assert (
        report.status_code == 409
        and "no evaluation_dataset_id" in report.json()["error"]["message"]
    )


def test_dfad_job_shows_the_values_derived_from_the_teacher(
    client: TestClient, teacher_id: str
) -> None:
    response = client.post(
        "/v1/jobs",
        json={
            "teacher_id": teacher_id,
            "method": "dfad",
            "student": {"architecture": "lenet5_half"},
            "budget_seconds": 600,
        },
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["method"] == "dfad" and job["batch_size"] == 256
    assert job["iterations"] is None and job["progress"]["total"] is None
    hyper = job["hyperparameters"]
    assert hyper["lr_student"] == 0.01 and hyper["weight_decay"] == 1e-4  # MNIST-like teacher input
    assert hyper["z_dim"] == 100 and hyper["generator"] == "dafl"


def test_hyperparameters_of_another_method_are_refused(client: TestClient, teacher_id: str) -> None:
    response = client.post(
        "/v1/jobs",
        json=job_body(teacher_id, method="dfad", hyperparameters={"beta": 1.0}),
    )
    assert response.status_code == 422
    assert "beta" in response.json()["error"]["message"]


def test_lopes_needs_a_teacher_with_metadata(client: TestClient, teacher_id: str) -> None:
    response = client.post(
        "/v1/jobs",
        json={
            "teacher_id": teacher_id,
            "method": "lopes",
            "student": {"architecture": "lenet5_half"},
            "iterations": 100,
        },
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "teacher_has_no_metadata"


def test_list_filters_by_teacher_method_and_creation_time(
    client: TestClient, teacher_id: str
) -> None:
    zskt = client.post("/v1/jobs", json=job_body(teacher_id)).json()
    dfad = client.post(
        "/v1/jobs", json=job_body(teacher_id, method="dfad", hyperparameters={})
    ).json()

    def ids(**params: str) -> list[str]:
        response = client.get("/v1/jobs", params=params)
        assert response.status_code == 200, response.text
        return [job["id"] for job in response.json()["items"]]

    assert ids(method="dfad") == [dfad["id"]]
    assert ids(teacher_id=teacher_id) == [dfad["id"], zskt["id"]]
    assert ids(teacher_id="tch_other") == []
    assert ids(created_after=dfad["created_at"]) == [dfad["id"]]
    assert ids(created_before=dfad["created_at"]) == [zskt["id"]]
    assert ids(created_after="2100-01-01T00:00:00Z") == []
    assert (
        client.get("/v1/teachers", params={"created_before": "2000-01-01T00:00:00Z"}).json()[
            "items"
        ]
        == []
    )
    # an empty or reversed range is a valid question with an empty answer
    moment = dfad["created_at"]
    assert ids(created_after=moment, created_before=moment) == []
    assert ids(created_after="2030-01-01T00:00:00Z", created_before="2020-01-01T00:00:00Z") == []
    # moments UTC cannot hold lie before or after everything stored
    assert ids(created_after="0001-01-01T00:00:00+05:00") == [dfad["id"], zskt["id"]]
    assert ids(created_before="0001-01-01T00:00:00+05:00") == []
    assert ids(created_before="9999-12-31T23:59:59-05:00") == [dfad["id"], zskt["id"]]
    assert ids(created_after="9999-12-31T23:59:59-05:00") == []


def test_cursors_of_any_well_formed_position_page_on(client: TestClient, teacher_id: str) -> None:
    first = client.post("/v1/jobs", json=job_body(teacher_id)).json()
    second = client.post("/v1/jobs", json=job_body(teacher_id)).json()
    page = client.get("/v1/jobs", params={"limit": 1}).json()
    assert [job["id"] for job in page["items"]] == [second["id"]]
    cursor = page["next_cursor"]
    assert cursor.endswith(f"_{second['id']}")
    rest = client.get("/v1/jobs", params={"after": cursor}).json()
    assert [job["id"] for job in rest["items"]] == [first["id"]]
    # a position no page ended at is still a position: everything older than it
    assert client.get("/v1/jobs", params={"after": "0_job_0"}).json()["items"] == []
    everything = client.get("/v1/jobs", params={"after": "99999999999999999_job_0"}).json()
    assert [job["id"] for job in everything["items"]] == [second["id"], first["id"]]


@pytest.mark.parametrize("limit", [0, 201, -1])
def test_page_sizes_out_of_range_are_422(client: TestClient, limit: int) -> None:
    for listing in ("/v1/jobs", "/v1/teachers", "/v1/datasets"):
        assert client.get(listing, params={"limit": limit}).status_code == 422


def test_an_empty_list_has_no_cursor(client: TestClient) -> None:
    assert client.get("/v1/jobs").json() == {"items": [], "next_cursor": None, "has_more": False}
