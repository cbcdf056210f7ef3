"""Fixtures for the real services a deployment uses: PostgreSQL, Redis and an S3 HTTP endpoint.

PostgreSQL and Redis must already run (as on the development machines and in CI); when they do
not, the tests fail with the command that starts them, never skip.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest

from tests.processes import free_port

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
START_HINT = (
    "start it with `docker compose up -d postgres redis`, or on the development machines: "
    "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` and "
    "`redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no`"
)


def _admin_connection() -> psycopg.Connection:
    try:
        return psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        pytest.fail(
            f"PostgreSQL is not reachable at 127.0.0.1:5432 ({error}); {START_HINT}", pytrace=False
        )


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    name = f"dfkd_test_{secrets.token_hex(6)}"
    with _admin_connection() as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with _admin_connection() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5).ping()
    except redis.RedisError as error:
        pytest.fail(
            f"Redis is not reachable at 127.0.0.1:6379 ({error}); {START_HINT}", pytrace=False
        )
    return REDIS_URL


@pytest.fixture
def s3_endpoint() -> Iterator[dict[str, str]]:
    """moto's threaded S3 server: a real HTTP endpoint speaking the S3 API. Yields DFKD_* settings."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield {
            "DFKD_S3_ENDPOINT": f"127.0.0.1:{port}",
            "DFKD_S3_ACCESS_KEY": "test-access-key",
            "DFKD_S3_SECRET_KEY": "test-secret-key",
            "DFKD_S3_BUCKET": f"dfkd-{secrets.token_hex(4)}",
            "DFKD_S3_REGION": "us-east-1",
        }
    finally:
        server.stop()
