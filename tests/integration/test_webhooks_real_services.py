"""Webhooks in the production shape: PostgreSQL, a Celery worker process on Redis, S3 over HTTP.

The API refuses internal targets; a job run by the Celery worker is delivered, signed, to a
receiver the operator allowed; the secret is stored encrypted in PostgreSQL (no column of the row
holds it), and `dfkd secrets rotate` moves it to a new key that the API alone then reads."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
from pathlib import Path

import httpx
import psycopg
from cryptography.fernet import Fernet
from standardwebhooks import Webhook

from service.secret_box import KEY_FILE
from tests.processes import (
    DFKD,
    start,
    start_api,
    stop,
    upload_lenet_teacher,
    wait_for_job,
    wait_until,
)
from tests.service.test_webhooks import Receiver

SECRET = "whsec_" + base64.b64encode(b"integration-signing-key-32bytes!").decode()


def test_webhooks_on_postgresql_celery_redis_and_s3(
    postgres_url: str,
    redis_url: str,
    s3_endpoint: dict[str, str],
    tmp_path: Path,
    teacher_file: Path,
) -> None:
    key = Fernet.generate_key().decode()
    env = {
        "DFKD_DATABASE_URL": postgres_url,
        "DFKD_BROKER_URL": redis_url,
        "DFKD_CELERY_QUEUE": f"dfkd-test-{secrets.token_hex(4)}",
        "DFKD_DATA_DIR": str(tmp_path / "data"),
        "DFKD_SECRET_KEY": key,
        "DFKD_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",  # the receiver below, on loopback
        **s3_endpoint,
    }
    migrate = subprocess.run(
        [DFKD, "migrate"], env=os.environ | env, capture_output=True, text=True, timeout=60
    )
    assert migrate.returncode == 0, migrate.stderr
    receiver = Receiver(failures=0)
    worker_log = tmp_path / "worker.log"
    worker = start(["worker", "--hostname", f"test-{secrets.token_hex(3)}@%h"], env, worker_log)
    try:
        wait_until(lambda: "ready" in worker_log.read_text(), 60, "the Celery worker to be ready")
        api, base_url = start_api(env, tmp_path / "api.log")
        try:
            with httpx.Client(base_url=base_url, timeout=30) as client:
                teacher_id = upload_lenet_teacher(client, teacher_file)
                body = {
                    "teacher_id": teacher_id,
                    "student": {"architecture": "lenet5_half"},
                    "iterations": 2,
                    "batch_size": 8,
                    "hyperparameters": {"generator_width": 8},
                }
                refused = client.post(
                    "/v1/jobs",
                    json=body
                    | {"webhook": {"url": "http://169.254.169.254/latest/", "secret": SECRET}},
                )
                assert refused.status_code == 422, refused.text
                assert refused.json()["error"]["code"] == "webhook_url_refused"
                assert "link-local" in refused.json()["error"]["message"]
                created = client.post(
                    "/v1/jobs", json=body | {"webhook": {"url": receiver.url, "secret": SECRET}}
                )
                assert created.status_code == 202, created.text
                job_id = created.json()["id"]
                final = wait_for_job(client, job_id, 300)
                wait_until(lambda: receiver.received, 30, "the webhook")
                answers = [created.text, str(final), client.get(f"/v1/jobs/{job_id}/events").text]
        finally:
            stop(api)
    finally:
        stop(worker)
        receiver.server.shutdown()
        print(worker_log.read_text()[-3000:])
    assert final["status"] == "succeeded", final
    headers, delivered = receiver.received[0]
    assert Webhook(SECRET).verify(delivered, headers)["data"]["id"] == job_id
    assert not any(SECRET in answer for answer in answers)
    assert not (tmp_path / "data" / KEY_FILE).exists()  # the deployment's key, not a made one

    sql_url = postgres_url.replace("+psycopg", "")
    row_query = "SELECT row_to_json(jobs)::text, webhook_secret_encrypted FROM jobs WHERE id = %s"
    with psycopg.connect(sql_url) as connection:
        row, token = connection.execute(row_query, (job_id,)).fetchone()
    assert SECRET not in row and SECRET.removeprefix("whsec_") not in row
    assert Fernet(key).decrypt(token.encode()).decode() == SECRET

    new_key = Fernet.generate_key().decode()
    rotate = subprocess.run(
        [DFKD, "secrets", "rotate"],
        env=os.environ | env | {"DFKD_SECRET_KEY": new_key, "DFKD_SECRET_KEYS_OLD": key},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rotate.returncode == 0, rotate.stderr
    assert rotate.stdout.strip() == '{"reencrypted": 1, "encrypted_plain": 0}'
    with psycopg.connect(sql_url) as connection:
        (rotated,) = connection.execute(
            "SELECT webhook_secret_encrypted FROM jobs WHERE id = %s", (job_id,)
        ).fetchone()
    assert rotated != token
    assert Fernet(new_key).decrypt(rotated.encode()).decode() == SECRET
