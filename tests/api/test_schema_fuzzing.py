"""Property-based fuzzing of the whole API from its own OpenAPI schema (schemathesis): for every
operation, generated requests (valid and invalid) never get a 5xx, and every response matches the
documented status codes and schemas. Runs against the ASGI app on the embedded default, seeded
with a teacher, a dataset and a job so path parameters often name real objects."""

from __future__ import annotations

import io
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from api.main import create_app
from service.auth import create_key
from service.db import make_engine, make_session_factory, session_scope
from service.migrate import upgrade_to_head
from service.queue import InProcessJobQueue
from service.settings import Settings
from tests.hostile_corpus import good_weights, npz

# Examples per operation; DFKD_FUZZ_EXAMPLES raises it for a longer run.
EXAMPLES = int(os.environ.get("DFKD_FUZZ_EXAMPLES", "50"))
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
REQUESTS: Counter[str] = Counter()  # by operation
STATUSES: Counter[int] = Counter()


@dataclass(frozen=True)
class Fuzzed:
    schema: schemathesis.BaseSchema
    ids: dict[str, str]  # seeded objects, by path parameter name
    auth: dict[str, str]  # a valid key of the tenant owning them


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Fuzzed:
    """The app on the embedded default, seeded as a tenant with an API key; its schema as
    schemathesis reads it."""
    tmp_path = tmp_path_factory.mktemp("fuzz")
    app_settings = Settings(data_dir=tmp_path / "data", max_upload_bytes=1024 * 1024)
    app_settings.data_dir.mkdir(parents=True)
    upgrade_to_head(app_settings.resolved_database_url)
    with session_scope(make_session_factory(make_engine(app_settings.resolved_database_url))) as s:
        _, key = create_key(s, "fuzz", "schemathesis")
    auth = {"Authorization": f"Bearer {key}"}
    app = create_app(app_settings, queue=InProcessJobQueue())
    with TestClient(app, headers=dict(auth)) as client:
        teacher = client.post(
            "/v1/teachers",
            files={"file": ("t.safetensors", io.BytesIO(good_weights()))},
            data={"architecture": "lenet5"},
        ).json()["id"]
        images = np.zeros((10, 1, 32, 32), np.uint8)
        dataset = client.post(
            "/v1/datasets",
            files={"file": ("d.npz", io.BytesIO(npz(images=images, labels=np.arange(10))))},
        ).json()["id"]
        job = client.post(
            "/v1/jobs",
            json={
                "teacher_id": teacher,
                "student": {"architecture": "lenet5_half"},
                "iterations": 10,
            },
        ).json()["id"]
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return Fuzzed(schema, {"teacher_id": teacher, "dataset_id": dataset, "job_id": job}, auth)


def operation_labels() -> list[str]:
    """Every operation of the schema, read from an app on a throwaway folder."""
    with tempfile.TemporaryDirectory() as folder:
        document = create_app(Settings(data_dir=Path(folder))).openapi()
    return [
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    ]


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    print(
        f"\nfuzzed {len(REQUESTS)} operations with {sum(REQUESTS.values())} requests; "
        f"statuses: {dict(sorted(STATUSES.items()))}"
    )


def cases(
    operation: schemathesis.APIOperation, fuzzed: Fuzzed
) -> st.SearchStrategy[schemathesis.Case]:
    """Valid and invalid requests: with generated credentials (mostly 401), and with the seeded
    tenant's key, with generated ids and with ids of the seeded objects."""
    seeded = {p.name: fuzzed.ids[p.name] for p in operation.path_parameters if p.name in fuzzed.ids}
    strategies = []
    for mode in GenerationMode:
        strategies.append(operation.as_strategy(mode))
        strategies.append(operation.as_strategy(mode, headers=dict(fuzzed.auth)))
        if seeded:
            strategies.append(
                operation.as_strategy(mode, headers=dict(fuzzed.auth), path_parameters=seeded)
            )
    return st.one_of(strategies)


@pytest.mark.parametrize("label", operation_labels())
def test_no_5xx_and_responses_match_the_schema(fuzzed: Fuzzed, label: str) -> None:
    method, path = label.split(" ", 1)
    operation = fuzzed.schema[path][method]

    @given(case=cases(operation, fuzzed))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call_and_validate(checks=CHECKS)
        REQUESTS[label] += 1
        STATUSES[response.status_code] += 1

    fuzz()
