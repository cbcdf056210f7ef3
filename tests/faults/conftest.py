"""Each fault test gets its own deployment: its own database, redis-server and S3 endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.deployment import Deployment, RedisServer, S3Server


@pytest.fixture
def deployment(postgres_url: str, tmp_path: Path) -> Iterator[Deployment]:
    redis = RedisServer(tmp_path / "redis.log")
    s3 = S3Server()
    redis.start()
    s3.start()
    deployment = Deployment(postgres_url, redis, s3, tmp_path)
    try:
        deployment.migrate()
        deployment.start_api()
        yield deployment
    finally:
        deployment.shutdown()
        redis.stop()
        s3.stop()
        print(deployment.worker_logs()[-6000:])
