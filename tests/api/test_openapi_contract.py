"""The served OpenAPI document says what the deployment does (api/openapi.py), read as a client
generator reads it; and a 405 names every method of its resource."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from service.settings import Settings

ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}


def served(tmp_path: Path, keys_required: bool) -> dict[str, Any]:
    app = create_app(Settings(data_dir=tmp_path / "data", require_api_keys=keys_required))
    with TestClient(app) as client:
        return client.get("/openapi.json").json()


@pytest.fixture
def document(tmp_path: Path) -> dict[str, Any]:
    return served(tmp_path, keys_required=False)


def errors(document: dict[str, Any], method: str, path: str) -> set[int]:
    responses = document["paths"][path][method]["responses"]
    declared = {int(status) for status in responses if int(status) >= 400}
    for status in declared:
        assert responses[str(status)]["content"] == ERROR, (method, path, status)
        assert responses[str(status)]["description"], (method, path, status)
    return declared


def test_each_operation_declares_the_errors_it_can_answer(document: dict[str, Any]) -> None:
    assert errors(document, "post", "/v1/teachers") == {400, 401, 409, 413, 422, 429, 503}
    assert errors(document, "put", "/v1/teachers/{teacher_id}/metadata") == {
        400,
        401,
        404,
        413,
        422,
        429,
        503,
    }
    assert errors(document, "post", "/v1/datasets") == {400, 401, 413, 422, 429, 503}
    assert errors(document, "post", "/v1/jobs") == {400, 401, 409, 413, 422, 429, 503}
    # the tenant quotas' 429 tells the client when to try again
    quota = document["paths"]["/v1/jobs"]["post"]["responses"]["429"]
    assert "quota_active_jobs" in quota["description"] and "Retry-After" in quota["headers"]
    assert errors(document, "get", "/v1/jobs") == {401, 422}
    assert errors(document, "get", "/v1/jobs/{job_id}") == {401, 404}
    assert errors(document, "get", "/v1/jobs/{job_id}/events") == {401, 404, 422, 429}
    assert errors(document, "post", "/v1/jobs/{job_id}/cancel") == {401, 404, 409}
    assert errors(document, "get", "/v1/jobs/{job_id}/student") == {401, 404, 409, 422}
    assert errors(document, "get", "/v1/architectures") == {422}  # ?q= longer than 100
    assert errors(document, "get", "/v1/jobs/{job_id}/student/config") == {401, 404, 409}
    # the route's own words for its own conflict are kept
    cancel = document["paths"]["/v1/jobs/{job_id}/cancel"]["post"]["responses"]["409"]
    assert "already ended" in cancel["description"]
    # FastAPI's `detail` body is never sent, so it is nowhere in the document
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_security_is_optional_on_an_open_deployment_and_required_with_keys(
    document: dict[str, Any], tmp_path: Path
) -> None:
    keyed = served(tmp_path, keys_required=True)
    for path in ("/v1/jobs", "/v1/teachers"):
        assert document["paths"][path]["get"]["security"] == [{"HTTPBearer": []}, {}]
        assert keyed["paths"][path]["get"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in document["paths"]["/healthz"]["get"]


def test_multipart_files_are_binary_in_both_spellings_and_fields_never_null(
    document: dict[str, Any],
) -> None:
    form = document["components"]["schemas"]["Body_teachers-upload_teacher"]["properties"]
    for name in ("file", "metadata"):
        assert form[name]["type"] == "string"
        assert form[name]["format"] == "binary"
        assert form[name]["contentMediaType"] == "application/octet-stream"
    assert form["num_classes"]["type"] == "integer" and "anyOf" not in form["num_classes"]
    assert all("anyOf" not in field for field in form.values())


def test_metrics_declares_the_content_type_it_answers(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    content = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    answered = client.get("/metrics").headers["content-type"]
    assert answered.startswith("text/plain; version=") and list(content) == [answered]


def test_a_405_names_every_method_of_the_resource(client: TestClient) -> None:
    response = client.delete("/v1/datasets")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert client.patch("/v1/jobs/job_x").headers["allow"] == "GET, DELETE"
