"""The method seam over HTTP: a method is one registration, GET /v1/methods is the registry,
and a job can run on a time budget instead of a number of iterations."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save_file

from api.main import create_app
from core.datasets import LabelledImages
from core.evaluation import accuracy
from core.hyperparameters import MethodConfig, hyperparameter
from core.loop import MethodContext, MethodRun
from core.losses import kl_divergence
from core.method_registry import BATCHNORM_STATISTICS, register_method, unregister_method
from core.models import build
from core.pool import ImagePool
from core.pool_student import PoolStudent
from core.schedules import cosine, set_learning_rate
from core.weights import load_weights, read_state_dict
from service.queue import InProcessJobQueue
from service.settings import Settings
from tests.processes import upload_lenet_teacher
from worker.context import make_context
from worker.job import run_job

# --- a method of this test module's own: the student matches the teacher on Gaussian noise


@dataclass
class NoiseKDConfig(MethodConfig):
    iterations: int | None = hyperparameter(200, "student steps", ge=1, le=100_000)
    batch_size: int = hyperparameter(64, "noise inputs per step", ge=2, le=1024)
    lr: float = hyperparameter(1e-3, "Adam learning rate, cosine-annealed", gt=0, le=1)
    noise_std: float = hyperparameter(1.0, "std of the noise inputs", gt=0, le=10)


class NoiseKD(MethodRun):
    config: NoiseKDConfig

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        self.optimizer = torch.optim.Adam(context.student.parameters(), lr=self.config.lr)

    def step(self, step: int, fraction: float) -> None:
        set_learning_rate(self.optimizer, self.config.lr, cosine(fraction))
        shape = (self.config.batch_size, *self.context.task.input_shape)
        inputs = torch.randn(shape, device=self.context.device) * self.config.noise_std
        with torch.no_grad():
            teacher_logits = self.context.teacher(inputs)
        self.loss = kl_divergence(teacher_logits, self.context.student(inputs))
        self.optimizer.zero_grad(set_to_none=True)
        self.loss.backward()
        self.optimizer.step()

    def metrics(self, step: int) -> dict[str, float]:
        return {"kl": self.loss.item()}

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


@pytest.fixture
def noise_kd() -> Iterator[str]:
    register_method(
        "noise_kd",
        title="NoiseKD",
        summary="the student matches the teacher on Gaussian noise (a test's own method)",
        paper="none: a baseline written inside tests/api/test_method_seam.py",
        config=NoiseKDConfig,
        example={"noise_std": 1.0},
    )(NoiseKD)
    yield "noise_kd"
    unregister_method("noise_kd")


@pytest.fixture
def seam_client(noise_kd: str, settings: Settings) -> Iterator[TestClient]:
    """The API made after the extra method registered, on the embedded default."""
    with TestClient(create_app(settings, queue=InProcessJobQueue())) as client:
        yield client


def job_body(teacher_id: str, **fields: object) -> dict:
    return {"teacher_id": teacher_id, "student": {"architecture": "lenet5_half"}, **fields}


def downloaded_student(client: TestClient, job: dict) -> torch.nn.Module:
    response = client.get(job["links"]["student"], params={"delivery": "stream"})
    assert response.status_code == 200
    return load_weights(build("lenet5_half"), read_state_dict(response.content))


def test_a_method_registered_in_a_test_module_runs_over_http(
    seam_client: TestClient, settings: Settings, teacher_file: Path
) -> None:
    methods = seam_client.get("/v1/methods").json()
    listed = {method["name"]: method for method in methods["items"]}
    assert listed["noise_kd"]["hyperparameters"][-1]["name"] == "noise_std"
    assert "NoiseKDJob" in seam_client.get("/openapi.json").json()["components"]["schemas"]

    teacher_id = upload_lenet_teacher(seam_client, teacher_file)
    body = job_body(teacher_id, method="noise_kd", iterations=30, checkpoint_every=10)
    job = seam_client.post(
        "/v1/jobs", json=body | {"hyperparameters": {"noise_std": 0.5, "log_every": 10}}
    )
    assert job.status_code == 202, job.text
    assert job.json()["hyperparameters"]["noise_std"] == 0.5
    run_job(job.json()["id"], make_context(settings))

    final = seam_client.get(f"/v1/jobs/{job.json()['id']}").json()
    assert final["status"] == "succeeded", final["error"]
    assert final["progress"] == final["progress"] | {"iteration": 30, "total": 30, "fraction": 1.0}
    kl = seam_client.get(f"/v1/jobs/{final['id']}/metrics", params={"name": "kl"}).json()
    assert [point["step"] for point in kl["items"]] == [10, 20, 30]
    student = downloaded_student(seam_client, final)
    assert student(torch.zeros(2, 1, 32, 32)).shape == (2, 10)

    wrong = seam_client.post("/v1/jobs", json=body | {"hyperparameters": {"generator_width": 32}})
    assert wrong.status_code == 422 and "generator_width" in wrong.text


def test_the_methods_listing_is_the_job_schema(client: TestClient) -> None:
    """GET /v1/methods and the POST /v1/jobs union: the same methods with the same defaults."""
    listing = client.get("/v1/methods").json()
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    union = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    members = [ref["$ref"].rsplit("/", 1)[1] for ref in union["schema"]["oneOf"]]
    assert members == [f"{method['title']}Job" for method in listing["items"]]
    assert {"zskt", "dfad", "lopes"} <= {method["name"] for method in listing["items"]}
    for method in listing["items"]:
        job = components[f"{method['title']}Job"]
        assert job["properties"]["method"]["const"] == method["name"]
        assert job["properties"]["batch_size"]["default"] == method["batch_size"]["default"]
        hyperparameters = components[f"{method['title']}Hyperparameters"]["properties"]
        assert list(hyperparameters) == [h["name"] for h in method["hyperparameters"]]
        for field in method["hyperparameters"]:
            assert hyperparameters[field["name"]].get("default") == field["default"], field
            assert field["description"] in hyperparameters[field["name"]]["description"]
        example = job["examples"][0]
        assert example == method["example"] and example["method"] == method["name"]
    assert listing["default"] == "zskt"
    one = client.get("/v1/methods/dfad").json()
    dfad = next(method for method in listing["items"] if method["name"] == "dfad")
    assert one["hyperparameters"] == dfad["hyperparameters"]
    width = next(h for h in one["hyperparameters"] if h["name"] == "generator_width")
    assert (width["default"], width["default_cpu"], width["default_gpu"]) == (None, 0.25, 1.0)


@pytest.mark.parametrize(
    ("fields", "status", "fragment"),
    [
        (
            {"method": "nope", "iterations": 5},
            422,
            "cmi, dafl, deepinversion, dfad, dfq, fastdfkd, lopes, zskt",
        ),
        ({"method": "dfad"}, 422, "iterations or budget_seconds"),
        ({"method": "dfad", "budget_seconds": 0}, 422, "budget_seconds"),
        ({"method": "dfad", "budget_seconds": -3}, 422, "budget_seconds"),
        ({"method": "dfad", "budget_seconds": 1e9}, 422, "budget_seconds"),
        ({"method": "dfad", "budget_seconds": 90, "time_limit_seconds": 60}, 422, "above the 60s"),
        ({"method": "lopes", "iterations": 5}, 422, "teacher_has_no_metadata"),
        ({"method": "dfad", "iterations": 5, "hyperparameters": {"beta": 1}}, 422, "beta"),
    ],
)
def test_bad_job_specs_name_what_is_wrong(
    client: TestClient, teacher_id: str, fields: dict, status: int, fragment: str
) -> None:
    response = client.post("/v1/jobs", json=job_body(teacher_id, **fields))
    assert response.status_code == status, response.text
    assert fragment in response.text


def test_a_budget_job_ends_succeeded_within_its_budget_with_a_usable_student(
    client: TestClient,
    settings: Settings,
    teacher_id: str,
    digits: tuple[LabelledImages, LabelledImages],
) -> None:
    budget = 20.0  # ZSKT reaches ~93% held-out in it on 2 CPU cores (batch 64, width 16)
    job = client.post(
        "/v1/jobs",
        json=job_body(
            teacher_id,
            budget_seconds=budget,
            batch_size=64,
            hyperparameters={"generator_width": 16, "log_every": 5},
            sample_every=0,
        ),
    )
    assert job.status_code == 202, job.text
    assert job.json()["iterations"] is None and job.json()["budget_seconds"] == budget
    began = time.monotonic()
    run_job(job.json()["id"], make_context(settings))
    wall = time.monotonic() - began

    final = client.get(f"/v1/jobs/{job.json()['id']}").json()
    assert final["status"] == "succeeded", final["error"]
    ran = (
        datetime.fromisoformat(final["finished_at"]) - datetime.fromisoformat(final["started_at"])
    ).total_seconds()
    assert budget <= ran < budget + 15 and wall < budget + 20, (ran, wall)
    assert final["progress"]["fraction"] == 1.0 and final["progress"]["iteration"] > 10
    # the cosine schedule ran on the budget's seconds: from the paper's 2e-3 to about 0 at its end
    rates = client.get(f"/v1/jobs/{final['id']}/metrics", params={"name": "lr_student"}).json()
    values = [point["value"] for point in rates["items"]]
    assert values[0] == pytest.approx(2e-3, rel=0.05) and values[-1] < 1e-4
    heldout = digits[1]
    student = downloaded_student(client, final)
    assert accuracy(student, heldout.images, heldout.labels) > 0.7


# --- a pool method of this module's own: the BatchNorm requirement and the synthetic set


@dataclass
class NoisePoolConfig(MethodConfig):
    iterations: int | None = hyperparameter(4, "batches of noise added to the pool", ge=1)
    batch_size: int = hyperparameter(16, "noise inputs per batch", ge=2)
    pool_size: int = hyperparameter(48, "inputs the pool keeps", ge=1)


class NoisePool(MethodRun):
    """Keeps noise and the teacher's logits on it in a pool; the student learns from the pool."""

    config: NoisePoolConfig

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        self.pool = ImagePool(self.config.pool_size)
        self.student = PoolStudent(context, lr=0.01, temperature=4, weight_decay=0, seed=0)

    def step(self, step: int, fraction: float) -> None:
        noise = torch.randn(self.config.batch_size, *self.context.task.input_shape)
        with torch.no_grad():
            self.pool.add(noise, self.context.teacher(noise))
        self.student.train(self.pool, 2, self.config.batch_size, fraction)

    def metrics(self, step: int) -> dict[str, float]:
        return {**self.student.metrics(), "pool_size": float(len(self.pool))}

    def synthetic_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pool.images, self.pool.logits

    def state_dict(self) -> dict:
        return {"pool": self.pool.state_dict(), "student": self.student.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.pool.load_state_dict(state["pool"])
        self.student.load_state_dict(state["student"])


@pytest.fixture
def pool_client(settings: Settings) -> Iterator[TestClient]:
    register_method(
        "noise_pool",
        title="NoisePool",
        summary="noise inputs in a pool (a test's own method that needs BatchNorm statistics)",
        paper="none: written inside tests/api/test_method_seam.py",
        config=NoisePoolConfig,
        requirements=(BATCHNORM_STATISTICS,),
    )(NoisePool)
    with TestClient(create_app(settings, queue=InProcessJobQueue())) as client:
        yield client
    unregister_method("noise_pool")


def test_a_pool_method_needs_batchnorm_and_publishes_its_synthetic_set(
    pool_client: TestClient, settings: Settings, teacher_file: Path, tmp_path: Path
) -> None:
    lenet_teacher = upload_lenet_teacher(pool_client, teacher_file)
    refused = pool_client.post(
        "/v1/jobs", json=job_body(lenet_teacher, method="noise_pool", iterations=4)
    )
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "teacher_has_no_batchnorm"
    assert "method noise_pool" in error["message"]
    assert "methods this teacher can run: dafl, dfad, zskt" in error["message"]

    torch.manual_seed(0)
    bn_teacher = build("resnet8", width=4).eval()  # untrained: the mechanics are under test
    path = tmp_path / "resnet8.safetensors"
    save_file(bn_teacher.state_dict(), str(path))
    with path.open("rb") as handle:
        uploaded = pool_client.post(
            "/v1/teachers",
            files={"file": ("resnet8.safetensors", handle)},
            data={"architecture": "resnet8", "architecture_kwargs": '{"width": 4}'},
        )
    assert uploaded.status_code == 201, uploaded.text
    job = pool_client.post(
        "/v1/jobs", json=job_body(uploaded.json()["id"], method="noise_pool", iterations=4)
    )
    assert job.status_code == 202, job.text
    assert pool_client.get(f"/v1/jobs/{job.json()['id']}/synthetic").status_code == 404
    run_job(job.json()["id"], make_context(settings))

    final = pool_client.get(f"/v1/jobs/{job.json()['id']}").json()
    assert final["status"] == "succeeded", final["error"]
    assert final["metrics"]["pool_size"] == 48  # 4 batches of 16, bounded to 48
    synthetic = pool_client.get(f"/v1/jobs/{final['id']}/synthetic", params={"delivery": "stream"})
    assert synthetic.status_code == 200
    arrays = np.load(io.BytesIO(synthetic.content))
    images, logits = torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["logits"])
    assert images.shape == (48, 1, 32, 32) and logits.shape == (48, 10)
    with torch.no_grad():
        torch.testing.assert_close(bn_teacher(images), logits)
