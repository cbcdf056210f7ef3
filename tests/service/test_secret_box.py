"""Webhook secrets at rest: encrypted in the database (absent from the SQLite file's bytes),
never in an API answer, rotated by `dfkd secrets rotate`, still signing deliveries."""

from __future__ import annotations

import base64
import stat

import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import update

from service.db import make_engine, make_session_factory
from service.models import Job
from service.secret_box import KEY_FILE, SecretKeyError, data_dir_key
from service.secret_rotation import rotate_webhook_secrets
from service.settings import Settings
from service.webhooks import deliver_job_webhook, signing_secret

RAW = b"raw-signing-key-bytes-0123456789"
SECRET = "whsec_" + base64.b64encode(RAW).decode()
UNRESOLVABLE = "https://hooks.dfkd-test.invalid/in"  # accepted at POST (RFC 6761: never resolves)


def submit(client: TestClient, teacher_id: str, secret: str = SECRET, **headers: str) -> dict:
    body = {
        "teacher_id": teacher_id,
        "student": {"architecture": "lenet5_half"},
        "iterations": 2,
        "webhook": {"url": UNRESOLVABLE, "secret": secret},
    }
    response = client.post("/v1/jobs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()


def database_bytes(settings: Settings) -> bytes:
    database = settings.data_dir / "dfkd.sqlite3"
    return b"".join(
        path.read_bytes()
        for path in (database, database.with_name(database.name + "-wal"))
        if path.exists()
    )


def job_row(settings: Settings, job_id: str) -> Job:
    with make_session_factory(make_engine(settings.resolved_database_url))() as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def test_the_secret_is_in_no_answer_and_not_in_the_database_file(
    client: TestClient, settings: Settings, teacher_id: str
) -> None:
    answers = [submit(client, teacher_id, **{"Idempotency-Key": "once"})]
    job_id = answers[0]["id"]
    body = {
        "teacher_id": teacher_id,
        "student": {"architecture": "lenet5_half"},
        "iterations": 2,
        "webhook": {"url": UNRESOLVABLE, "secret": SECRET},
    }
    replay = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "once"})
    assert replay.json()["id"] == job_id
    # the key check compares secrets by a keyed digest: another secret is another request
    other = body | {"webhook": {"url": UNRESOLVABLE, "secret": SECRET + "x"}}
    conflict = client.post("/v1/jobs", json=other, headers={"Idempotency-Key": "once"})
    assert conflict.status_code == 409, conflict.text
    for path in ("", "/events", "/metrics", "/samples"):
        answers.append(client.get(f"/v1/jobs/{job_id}{path}").json())
    answers.append(client.get("/v1/jobs").json())
    answers.append(client.get("/openapi.json").json())
    texts = [replay.text, *(str(answer) for answer in answers)]
    for secret in (SECRET, SECRET.removeprefix("whsec_")):
        assert not any(secret in text for text in texts)
    assert answers[0]["webhook_url"] == UNRESOLVABLE

    stored = database_bytes(settings)
    assert len(stored) > 10_000  # the database was read, with the job in it
    assert job_id.encode() in stored
    for secret in (SECRET.encode(), SECRET.removeprefix("whsec_").encode(), RAW):
        assert secret not in stored
    row = job_row(settings, job_id)
    assert row.webhook_secret is None and row.webhook_secret_encrypted
    assert signing_secret(row, settings) == SECRET  # what signs the deliveries


def test_the_embedded_default_keeps_its_key_in_the_data_dir_readable_by_its_owner_only(
    client: TestClient, settings: Settings, teacher_id: str
) -> None:
    job_id = submit(client, teacher_id)["id"]
    key_file = settings.data_dir / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    token = job_row(settings, job_id).webhook_secret_encrypted
    assert Fernet(key_file.read_bytes()).decrypt(token.encode()).decode() == SECRET
    assert data_dir_key(settings.data_dir) == key_file.read_bytes()  # made once, then kept
    assert [p.name for p in settings.data_dir.iterdir() if "secret" in p.name] == [KEY_FILE]


def test_rotation_reencrypts_every_secret_and_encrypts_old_plain_ones(
    client: TestClient, settings: Settings, teacher_id: str
) -> None:
    first = Fernet.generate_key().decode()
    settings = Settings.model_validate(settings.model_dump() | {"secret_key": first})
    client.app.state.settings = settings  # jobs are now encrypted with `first`
    encrypted_id = submit(client, teacher_id)["id"]
    plain_id = submit(client, teacher_id, secret="a-secret-from-before-0009")["id"]
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    with sessions() as session:  # as a job made before migration 0009 stored it
        session.execute(
            update(Job)
            .where(Job.id == plain_id)
            .values(webhook_secret="a-secret-from-before-0009", webhook_secret_encrypted=None)
        )
        session.commit()
    assert signing_secret(job_row(settings, plain_id), settings) == "a-secret-from-before-0009"

    second = Fernet.generate_key().decode()
    rotating = Settings.model_validate(
        settings.model_dump() | {"secret_key": second, "secret_keys_old": first}
    )
    assert signing_secret(job_row(settings, encrypted_id), rotating) == SECRET  # old key read
    counts = rotate_webhook_secrets(sessions, rotating)
    assert (counts.reencrypted, counts.encrypted_plain) == (1, 1)

    rotated = Settings.model_validate(settings.model_dump() | {"secret_key": second})
    for job_id, secret in ((encrypted_id, SECRET), (plain_id, "a-secret-from-before-0009")):
        row = job_row(settings, job_id)
        assert row.webhook_secret is None
        assert signing_secret(row, rotated) == secret  # the new key alone reads them
        with pytest.raises(SecretKeyError, match="DFKD_SECRET_KEYS_OLD"):
            signing_secret(row, settings)  # the old key alone no longer does
    assert b"a-secret-from-before-0009" not in database_bytes(settings)


def test_a_worker_without_the_key_says_so_instead_of_signing_wrongly(
    client: TestClient, settings: Settings, teacher_id: str
) -> None:
    job_id = submit(client, teacher_id)["id"]
    stranger = Settings.model_validate(
        settings.model_dump() | {"secret_key": Fernet.generate_key().decode()}
    )
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    assert deliver_job_webhook(sessions, stranger, job_id, delays=()) is False
    events = client.get(f"/v1/jobs/{job_id}/events").json()["items"]
    webhook = [e["message"] for e in events if e["kind"] == "webhook"]
    assert len(webhook) == 1 and "the same DFKD_SECRET_KEY" in webhook[0], webhook


@pytest.mark.parametrize("variable", ["DFKD_SECRET_KEY", "DFKD_SECRET_KEYS_OLD"])
def test_a_key_that_is_not_a_fernet_key_stops_the_process_with_the_fix(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "correct horse battery staple")
    with pytest.raises(ValidationError, match="dfkd secrets generate-key"):
        Settings()
