"""The baseline for bench/polling.py: a bare FastAPI + SQLite endpoint shaped like GET /v1/jobs/{id}.

    .venv/bin/uvicorn --app-dir bench bare_app:app --port 8001   (BARE_DB=/tmp/bare.sqlite3)

One table, one row per job holding a JSON document about the size of the service's answer; a
plain sync endpoint (FastAPI's thread pool, as the service's are) opening SQLite per request.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException

DB = Path(os.environ.get("BARE_DB", "bare.sqlite3"))
DOCUMENT = {
    "status": "running",
    "progress": {"iteration": 100, "total": 1000, "fraction": 0.1, "samples_per_second": 900.0},
    "metrics": {name: 0.5 for name in ("kl", "loss_student", "loss_generator", "attention")},
    "hyperparameters": {"generator_width": 32, "log_every": 10, "beta": 2500.0},
}


def _setup() -> None:
    with sqlite3.connect(DB) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, doc TEXT)")
        connection.execute(
            "INSERT OR REPLACE INTO jobs VALUES (?, ?)", ("job_bare", json.dumps(DOCUMENT))
        )


_setup()
app = FastAPI()


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/v1/jobs/{job_id}")
def get_job(job_id: str) -> dict[str, Any]:
    connection = sqlite3.connect(DB)
    try:
        row = connection.execute("SELECT doc FROM jobs WHERE id = ?", (job_id,)).fetchone()
    finally:
        connection.close()
    if row is None:
        raise HTTPException(404)
    return {"id": job_id, **json.loads(row[0])}
