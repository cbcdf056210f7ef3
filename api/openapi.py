"""The served OpenAPI document, made exact in one place.

FastAPI writes what the routes' signatures say; this adds what only the deployment and the error
handlers know, so that a generated client and a schema fuzzer meet the API that actually answers:

* every error status an operation can answer, with the error schema, decided by what the
  operation has (`ERROR_RULES`): a later status or operation is declared here, once;
* security as the deployment enforces it: optional on an open deployment (no key acts as the
  default tenant), required where `DFKD_REQUIRE_API_KEYS` is set;
* multipart file fields in both spellings, OpenAPI 3.1's `contentMediaType` and 3.0's
  `format: binary` (openapi-python-client 0.29 reads only the latter: its issue #1417);
* multipart fields without the `null` alternative: a form field is sent or left out, and the
  string "null" is not a null.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from api.errors import ErrorResponse

Operation = dict[str, Any]
ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorResponse"}
BINARY = "application/octet-stream"
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})


def _parameters(operation: Operation, where: str) -> list[dict[str, Any]]:
    return [p for p in operation.get("parameters", []) if p.get("in") == where]


def _takes_a_key(operation: Operation) -> bool:
    return bool(operation.get("security"))


def _has_body(operation: Operation) -> bool:
    return "requestBody" in operation


def _has_input(operation: Operation) -> bool:
    """A body or a parameter that can be invalid (a path segment that is any string cannot)."""
    return _has_body(operation) or any(
        parameter["in"] != "path" or parameter.get("schema", {}).get("type") != "string"
        for parameter in operation.get("parameters", [])
    )


def _names_objects(operation: Operation) -> bool:
    return bool(_parameters(operation, "path"))


def _is_idempotent_creation(operation: Operation) -> bool:
    return any(p["name"] == "Idempotency-Key" for p in _parameters(operation, "header"))


def _deletes(operation: Operation) -> bool:
    """A DELETE route: its operation id is `<tag>-delete_<resource>` (api/main.py)."""
    return operation.get("operationId", "").partition("-")[2].startswith("delete_")


def _deletes_a_dataset(operation: Operation) -> bool:
    return operation.get("operationId") == "datasets-delete_dataset"


def _streams(operation: Operation) -> bool:
    ok = operation.get("responses", {}).get("200", {})
    return "text/event-stream" in ok.get("content", {})


# the operations that store bytes or start a job for the tenant (service/quotas.py)
QUOTA_OPERATIONS = frozenset(
    {
        "teachers-upload_teacher",
        "teachers-put_metadata",
        "datasets-upload_dataset",
        "jobs-create_job",
    }
)


def _counts_against_a_quota(operation: Operation) -> bool:
    return operation.get("operationId") in QUOTA_OPERATIONS


RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}


@dataclass(frozen=True)
class ErrorRule:
    status: int
    description: str
    applies: Callable[[Operation], bool]
    headers: dict[str, Any] | None = None


ERROR_RULES = (
    ErrorRule(
        400,
        "`malformed_body`: the body could not be parsed at all (broken multipart, not UTF-8)",
        _has_body,
    ),
    ErrorRule(
        401,
        "`missing_api_key` (where keys are required) or `invalid_api_key`: unknown or revoked",
        _takes_a_key,
    ),
    ErrorRule(
        404,
        "`not_found`: no such object, or one of another tenant",
        _names_objects,
    ),
    ErrorRule(
        409,
        "`idempotency_conflict`: the Idempotency-Key was used with a different request",
        _is_idempotent_creation,
    ),
    ErrorRule(
        409,
        "`dataset_in_use`: queued or running jobs read the dataset; the message names them",
        _deletes_a_dataset,
    ),
    ErrorRule(
        413,
        "`body_too_large` (a JSON body over DFKD_MAX_BODY_BYTES, refused before it is parsed) "
        "or `upload_too_large` (a file over the upload limit)",
        _has_body,
    ),
    ErrorRule(
        422,
        "invalid input (`validation_error` and the codes of each operation); the message says "
        "what to change",
        _has_input,
    ),
    ErrorRule(
        429,
        "`too_many_streams`: too many open event streams for the tenant or the API; "
        "Retry-After says when to try again",
        _streams,
        RETRY_AFTER,
    ),
    ErrorRule(
        429,
        "`quota_active_jobs` or `quota_storage`: the tenant is at its quota of active jobs "
        "(queued + running) or of stored bytes; `details` gives the quota, its limit and the "
        "current use, Retry-After a time to try again (or free some: cancel a job, delete a file)",
        _counts_against_a_quota,
        RETRY_AFTER,
    ),
    ErrorRule(
        503,
        "`storage_unavailable` or `broker_unavailable`: nothing was stored or started, try again",
        _has_body,
    ),
    ErrorRule(
        503,
        "`storage_unavailable`: the object is gone from the API; its remaining files are deleted "
        "once storage is back",
        _deletes,
    ),
)


def declare_errors(document: dict[str, Any]) -> None:
    """Each operation's error statuses with the error schema; a route's own, more specific
    description of a status is kept."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, schema in error_schema.pop("$defs", {}).items():
        schemas.setdefault(name, schema)
    schemas.setdefault("ErrorResponse", error_schema)
    for operation in operations(document):
        responses = operation.setdefault("responses", {})
        # FastAPI's own 422 names a `detail` body this API never sends
        if "HTTPValidationError" in str(responses.get("422", "")):
            del responses["422"]
        for rule in ERROR_RULES:
            if rule.applies(operation):
                answer = responses.setdefault(str(rule.status), {"description": rule.description})
                answer["content"] = {"application/json": {"schema": ERROR_SCHEMA}}
                if rule.headers:
                    answer["headers"] = rule.headers
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)


def declare_security(document: dict[str, Any], keys_required: bool) -> None:
    """On an open deployment a request without a key is served as the default tenant: the
    schema says so with an empty requirement beside the bearer key."""
    if keys_required:
        return
    for operation in operations(document):
        if operation.get("security") and {} not in operation["security"]:
            operation["security"] = [*operation["security"], {}]


def declare_form_fields(document: dict[str, Any]) -> None:
    """Multipart bodies: file fields in both spellings; optional fields without `null`."""
    schemas = document.get("components", {}).get("schemas", {})
    for operation in operations(document):
        form = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data")
        if form is None:
            continue
        body = _resolve(form["schema"], schemas)
        for name, field in body.get("properties", {}).items():
            body["properties"][name] = _form_field(field)


def _form_field(field: dict[str, Any]) -> dict[str, Any]:
    variants = field.get("anyOf")
    if variants is not None:
        present = [variant for variant in variants if variant.get("type") != "null"]
        if len(present) == 1:
            field = {key: value for key, value in field.items() if key != "anyOf"} | present[0]
    if field.get("contentMediaType") == BINARY:
        field = {**field, "format": "binary"}
    return field


def _resolve(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    reference = schema.get("$ref", "")
    return schemas[reference.rsplit("/", 1)[-1]] if reference else schema


def operations(document: dict[str, Any]) -> list[Operation]:
    return [
        operation
        for item in document.get("paths", {}).values()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def install_contract(app: FastAPI, keys_required: bool) -> None:
    """Serve FastAPI's document completed by the functions above (built once, then cached)."""
    generate = app.openapi

    def contract() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            declare_form_fields(document)
            declare_errors(document)
            declare_security(document, keys_required)
        return app.openapi_schema

    app.openapi = contract  # type: ignore[method-assign]
