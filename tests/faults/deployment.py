"""A whole deployment in real processes for the fault tests: PostgreSQL (the test's own
database), a private redis-server, moto's S3 over HTTP, `dfkd worker` process groups and
`dfkd serve`; each part can be stopped, killed and started again."""

from __future__ import annotations

import io
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import torch

from service.blob_keys import checkpoint_key
from service.blobstore import S3BlobStore
from service.settings import Settings
from tests.processes import (
    DFKD,
    REPO,
    free_port,
    start_api,
    stop,
    upload_lenet_teacher,
    wait_until,
)

# Tiny on purpose: the whole suite runs in minutes on 2 CPU cores.
JOB: dict[str, Any] = {
    "method": "zskt",
    "student": {"architecture": "lenet5_half"},
    "iterations": 60,
    "batch_size": 32,
    "seed": 3,
    "checkpoint_every": 20,
    "sample_every": 0,
    "hyperparameters": {"generator_width": 32, "log_every": 5},
}
# A lease of seconds, renewed every second: a dead worker's job is back in the queue within
# ~10 s instead of the production default's ~35 s. The kill -9 test runs on the defaults.
FAST_LEASES = {"DFKD_JOB_LEASE_SECONDS": "8", "DFKD_LEASE_RENEW_SECONDS": "1"}


class RedisServer:
    """A private redis-server on a free port (never the shared one on 6379), restartable."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        self.process = subprocess.Popen(
            command, stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )
        import redis

        def answers() -> bool:
            try:
                return bool(redis.Redis.from_url(self.url, socket_connect_timeout=1).ping())
            except redis.RedisError:
                return False

        wait_until(answers, 20, f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None


class S3Server:
    """moto's S3 over HTTP in this process; stopping it closes the port, starting it again
    serves the same buckets (moto keeps its state in the process)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: Any = None
        self.settings = {
            "DFKD_S3_ENDPOINT": f"127.0.0.1:{self.port}",
            "DFKD_S3_ACCESS_KEY": "test-access-key",
            "DFKD_S3_SECRET_KEY": "test-secret-key",
            "DFKD_S3_BUCKET": f"dfkd-{secrets.token_hex(4)}",
            "DFKD_S3_REGION": "us-east-1",
        }

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def store(self) -> S3BlobStore:
        return S3BlobStore(
            Settings(**{k.removeprefix("DFKD_").lower(): v for k, v in self.settings.items()})
        )


@dataclass
class Deployment:
    postgres_url: str
    redis: RedisServer
    s3: S3Server
    logs: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    leases: dict[str, str] = field(default_factory=lambda: dict(FAST_LEASES))
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    api: subprocess.Popen[bytes] | None = None
    base_url: str = ""

    @property
    def env(self) -> dict[str, str]:
        return {
            "DFKD_DATABASE_URL": self.postgres_url,
            "DFKD_BROKER_URL": self.redis.url,
            "DFKD_CELERY_QUEUE": "dfkd-faults",
            "DFKD_DATA_DIR": str(self.logs / "data"),
            "DFKD_TORCH_THREADS": "1",  # same arithmetic in every worker: runs compare bit for bit
            "DFKD_LOG_FORMAT": "text",
            **self.leases,
            **self.s3.settings,
            **self.extra_env,
        }

    def migrate(self) -> None:
        result = subprocess.run(
            [DFKD, "migrate"],
            env=self.env | {"PATH": ""},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr

    def start_worker(self, concurrency: int = 1) -> subprocess.Popen[bytes]:
        """A `dfkd worker` in its own process group (main process + pool children)."""
        log = self.logs / f"worker-{len(self.workers) + 1}.log"
        name = f"fault-{secrets.token_hex(3)}@%h"
        command = [DFKD, "worker", "--concurrency", str(concurrency), "--hostname", name]
        process = subprocess.Popen(
            command,
            env={**os.environ, **self.env},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
        self.workers.append(process)

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"dfkd worker exited early:\n{log.read_text()[-3000:]}")
            return " ready." in log.read_text()

        wait_until(ready, 90, "the Celery worker to be ready")
        return process

    def kill_worker(self, process: subprocess.Popen[bytes]) -> None:
        """kill -9 of the whole process group: no task ack, no goodbye to the broker."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def start_api(self) -> str:
        self.api, self.base_url = start_api(self.env, self.logs / "api.log")
        return self.base_url

    def worker_logs(self) -> str:
        return "\n".join(
            log.read_text(errors="replace") for log in sorted(self.logs.glob("worker-*.log"))
        )

    def shutdown(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        if self.api is not None:
            stop(self.api)

    # --- the user's side, over HTTP

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30)

    def upload_teacher(self, teacher_file: Path) -> str:
        with self.client() as client:
            return upload_lenet_teacher(client, teacher_file)

    def submit(self, teacher_id: str, **changes: Any) -> str:
        with self.client() as client:
            response = client.post("/v1/jobs", json={**JOB, "teacher_id": teacher_id, **changes})
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def job(self, job_id: str) -> dict[str, Any]:
        with self.client() as client:
            return client.get(f"/v1/jobs/{job_id}").json()

    def wait_for_step(self, job_id: str, step: int, timeout: float = 180) -> dict[str, Any]:
        current: dict[str, Any] = {}

        def reached() -> bool:
            nonlocal current
            current = self.job(job_id)
            assert current["status"] in {"queued", "running"}, current
            return current["progress"]["iteration"] >= step

        wait_until(reached, timeout, f"job {job_id} to pass step {step}", interval=0.3)
        return current

    def wait_for_attempt(self, job_id: str, attempt: int, timeout: float) -> dict[str, Any]:
        """Polls until the job's `attempt` has claimed it (running again, or already past it)."""
        current: dict[str, Any] = {}

        def claimed() -> bool:
            nonlocal current
            current = self.job(job_id)
            return current["attempts"] >= attempt and current["status"] != "queued"

        wait_until(claimed, timeout, f"job {job_id} to run attempt {attempt}", interval=0.2)
        return current

    def wait_for_end(self, job_id: str, timeout: float = 300) -> dict[str, Any]:
        final: dict[str, Any] = {}

        def ended() -> bool:
            nonlocal final
            final = self.job(job_id)
            return final["status"] in {"succeeded", "failed", "cancelled"}

        wait_until(ended, timeout, f"job {job_id} to end", interval=0.5)
        return final

    def events(self, job_id: str) -> list[dict[str, Any]]:
        with self.client() as client:
            return client.get(f"/v1/jobs/{job_id}/events", params={"limit": 200}).json()["items"]

    def metric_steps(self, job_id: str, name: str = "kl") -> list[int]:
        with self.client() as client:
            items = client.get(
                f"/v1/jobs/{job_id}/metrics", params={"name": name, "limit": 1000}
            ).json()["items"]
        return [point["step"] for point in items]

    def student(self, job_id: str) -> httpx.Response:
        with self.client() as client:
            return client.get(f"/v1/jobs/{job_id}/student", follow_redirects=True)

    def checkpoint(self, job_id: str) -> dict[str, Any] | None:
        store = self.s3.store()
        key = checkpoint_key(job_id)
        if not store.exists(key):
            return None
        return torch.load(io.BytesIO(store.get_bytes(key)), weights_only=True)

    def terminate_worker_connections(self) -> int:
        """pg_terminate_backend on every connection the workers hold to this test's database."""
        database = self.postgres_url.rsplit("/", 1)[1]
        with psycopg.connect(
            "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True
        ) as connection:
            rows = connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND application_name = 'dfkd-worker'",
                (database,),
            ).fetchall()
        return sum(1 for (terminated,) in rows if terminated)


def expected_steps(iterations: int, log_every: int) -> list[int]:
    return list(range(log_every, iterations + 1, log_every))


def elapsed(since: float) -> float:
    return round(time.monotonic() - since, 1)
