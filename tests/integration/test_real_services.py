"""The production shape on real parts: PostgreSQL, a Celery worker process on Redis, S3 over HTTP."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

from sqlalchemy import create_engine, inspect

from core.datasets import LabelledImages
from service.blob_keys import student_key
from service.blobstore import S3BlobStore
from service.settings import Settings
from tests.flow import distil_over_http
from tests.processes import DFKD, start, start_api, stop, wait_until


def test_migrations_build_the_schema_from_empty_on_postgresql(
    postgres_url: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [DFKD, "migrate"],
        env={"DFKD_DATABASE_URL": postgres_url, "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    engine = create_engine(postgres_url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"teachers", "jobs", "metric_points", "job_events", "alembic_version"} <= tables


def test_teacher_in_student_out_on_postgresql_celery_redis_and_s3(
    postgres_url: str,
    redis_url: str,
    s3_endpoint: dict[str, str],
    tmp_path: Path,
    teacher_file: Path,
    digits: tuple[LabelledImages, LabelledImages],
) -> None:
    env = {
        "DFKD_DATABASE_URL": postgres_url,
        "DFKD_BROKER_URL": redis_url,
        "DFKD_CELERY_QUEUE": f"dfkd-test-{secrets.token_hex(4)}",  # isolated from other runs on this Redis
        "DFKD_DATA_DIR": str(tmp_path / "data"),
        **s3_endpoint,
    }
    migrate = subprocess.run(
        [DFKD, "migrate"], env=env | {"PATH": ""}, capture_output=True, text=True, timeout=60
    )
    assert migrate.returncode == 0, migrate.stderr

    worker_log = tmp_path / "worker.log"
    worker = start(["worker", "--hostname", f"test-{secrets.token_hex(3)}@%h"], env, worker_log)
    try:
        wait_until(lambda: "ready" in worker_log.read_text(), 60, "the Celery worker to be ready")
        api, base_url = start_api(env, tmp_path / "api.log")
        try:
            final = distil_over_http(base_url, teacher_file, digits[1])
        finally:
            stop(api)
    finally:
        stop(worker)
        print(worker_log.read_text()[-3000:])
    assert final["student_accuracy"] >= 0.85, final
    assert final["attempts"] == 1
    assert final["download_redirected"]  # S3 serves artifacts by presigned URL
    # the worker wrote to S3, not to a local folder
    settings = Settings(
        **{key.removeprefix("DFKD_").lower(): value for key, value in s3_endpoint.items()}
    )
    assert S3BlobStore(settings).exists(student_key(final["id"]))
    assert not (tmp_path / "data" / "blobs").exists()
