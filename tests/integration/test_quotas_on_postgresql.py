"""Tenant quotas on the production shape: a real `dfkd serve` on PostgreSQL, a Redis broker and
S3 over HTTP (moto). Concurrent POSTs for the last job slot, overrides by `dfkd tenants`, and
storage refusals that leave no key behind on S3."""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from service.blobstore import S3BlobStore
from service.settings import Settings
from tests.processes import DFKD, start_api, stop, upload_lenet_teacher

CONCURRENT = 8


def job_body(teacher_id: str, seed: int) -> dict:
    return {
        "teacher_id": teacher_id,
        "student": {"architecture": "lenet5_half"},
        "iterations": 10,
        "seed": seed,
    }


def s3_keys(s3_endpoint: dict[str, str]) -> list[str]:
    settings = Settings(
        **{key.removeprefix("DFKD_").lower(): value for key, value in s3_endpoint.items()}
    )
    store = S3BlobStore(settings)
    store.check()  # makes the bucket if no upload has yet
    return sorted(o.object_name for o in store.client.list_objects(store.bucket, recursive=True))


def test_quotas_on_postgresql_redis_and_s3(
    postgres_url: str,
    redis_url: str,
    s3_endpoint: dict[str, str],
    tmp_path: Path,
    teacher_file: Path,
) -> None:
    env = {
        "DFKD_DATABASE_URL": postgres_url,
        # no worker consumes this queue: every accepted job stays queued, so stays active
        "DFKD_BROKER_URL": redis_url,
        "DFKD_CELERY_QUEUE": f"dfkd-test-{secrets.token_hex(4)}",
        "DFKD_DATA_DIR": str(tmp_path / "data"),
        "DFKD_TENANT_MAX_ACTIVE_JOBS": "1",
        **s3_endpoint,
    }

    def tenants(*args: str) -> dict:
        result = subprocess.run(
            [DFKD, "tenants", *args],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    migrate = subprocess.run(
        [DFKD, "migrate"], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert migrate.returncode == 0, migrate.stderr
    api, base_url = start_api(env, tmp_path / "api.log")
    try:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            teacher = upload_lenet_teacher(client, teacher_file)

            def post(seed: int) -> httpx.Response:
                return client.post("/v1/jobs", json=job_body(teacher, seed))

            # one slot left, eight requests at once: exactly one gets it
            with ThreadPoolExecutor(CONCURRENT) as pool:
                answers = list(pool.map(post, range(CONCURRENT)))
            statuses = sorted(answer.status_code for answer in answers)
            assert statuses == [202] + [429] * (CONCURRENT - 1), [a.text for a in answers]
            refused = next(answer for answer in answers if answer.status_code == 429)
            assert refused.json()["error"]["code"] == "quota_active_jobs"
            assert refused.headers["retry-after"]

            assert tenants("set-quota", "--tenant", "default", "--max-active-jobs", "3")[
                "limits"
            ] == {"max_active_jobs": 3, "max_storage_bytes": None}
            with ThreadPoolExecutor(CONCURRENT) as pool:
                answers = list(pool.map(post, range(CONCURRENT, 2 * CONCURRENT)))
            assert sorted(a.status_code for a in answers) == [202] * 2 + [429] * (CONCURRENT - 2)
            assert tenants("list", "--tenant", "default")["use"]["active_jobs"] == 3

            size = teacher_file.stat().st_size
            report = tenants("set-quota", "--tenant", "default", "--max-storage-bytes", str(size))
            assert report["use"]["storage_bytes"] == size
            before = s3_keys(s3_endpoint)
            with teacher_file.open("rb") as handle:
                second = client.post(
                    "/v1/teachers",
                    files={"file": ("t.safetensors", handle)},
                    data={"architecture": "lenet5"},
                )
            buffer = io.BytesIO()
            np.savez(buffer, images=np.zeros((2, 1, 32, 32), np.uint8), labels=np.arange(2))
            dataset = client.post("/v1/datasets", files={"file": ("d.npz", buffer.getvalue())})
            for answer in (second, dataset):
                assert answer.status_code == 429, answer.text
                assert answer.json()["error"]["code"] == "quota_storage"
                assert answer.json()["error"]["details"][0]["current"] == size
            assert s3_keys(s3_endpoint) == before == [f"teachers/{teacher}/weights.safetensors"]

            tenants("clear", "--tenant", "default")  # back to the deployment's settings
            assert post(100).status_code == 429  # 3 active, the setting allows 1
            assert client.post(
                "/v1/datasets", files={"file": ("d.npz", buffer.getvalue())}
            ).is_success
    finally:
        stop(api)
