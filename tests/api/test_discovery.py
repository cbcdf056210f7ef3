from __future__ import annotations

from fastapi.testclient import TestClient


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}


def test_architectures_come_from_the_registry(client: TestClient) -> None:
    items = {item["name"]: item for item in client.get("/v1/architectures").json()["items"]}
    assert {"lenet5", "lenet5_half", "wrn"} <= set(items)
    assert items["wrn"]["kwargs"]["depth"] == 16
    assert items["wrn"]["attention_taps"] == ["group1", "group2", "group3"]
    assert items["lenet5"]["input_shape"] == [1, 32, 32]


def test_swagger_ui_and_schema_with_readable_operation_ids(client: TestClient) -> None:
    assert "swagger-ui" in client.get("/docs").text
    schema = client.get("/openapi.json").json()
    operation_ids = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    assert {
        "teachers-upload_teacher",
        "jobs-create_job",
        "jobs-get_job",
        "jobs-download_student",
    } <= operation_ids
    schemas = schema["components"]["schemas"]
    examples = {
        name: schemas[name]["examples"][0]["method"] for name in ("ZSKTJob", "DFADJob", "LopesJob")
    }
    assert examples == {"ZSKTJob": "zskt", "DFADJob": "dfad", "LopesJob": "lopes"}
    hyper = schemas["ZSKTHyperparameters"]["properties"]
    assert "paper: 2e-3" in hyper["lr_student"]["description"]
    assert (
        "0.01 for MNIST-like"
        in schemas["DFADHyperparameters"]["properties"]["lr_student"]["description"]
    )
