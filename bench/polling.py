"""Latency of GET /v1/jobs/{id} under 100 pollers (100 req/s, open loop) while a job runs.

    .venv/bin/python bench/polling.py                       # 60 s per variant + saturation, ~8 min
    .venv/bin/python bench/polling.py --duration 10 --step-duration 5 --no-write   # a check
    .venv/bin/python bench/polling.py --variants bare sqlite

Variants, each a fresh server process on loopback:
- bare:     a bare FastAPI + SQLite endpoint (bench/bare_app.py) under uvicorn, no job running;
- idle:     `dfkd serve`, embedded default (SQLite, runner process beside the API), no job;
- sqlite:   the same with a ZSKT job (LeNet-5 -> LeNet-5-half, batch 128) training meanwhile;
- postgres: `dfkd serve` on a throwaway PostgreSQL database (127.0.0.1:5432, user postgres) with
            the embedded runner process (no Celery), the same job training meanwhile.
The load comes from bench/loadgen.py in its own process (httpx AsyncClient, 100 connections): the
timetable is fixed and latency runs from each request's due time. After the 100 req/s run, the
rate goes up in steps until p99 passes 100 ms, a request fails, or the achieved rate falls behind;
the saturation rate is the last step that held. All on one machine: the load generator, the API
and the job share its cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from safetensors.torch import save_file
from service_harness import (
    command_line,
    free_port,
    machine,
    machine_line,
    postgres_database,
    save_results,
    start_api,
    start_process,
    stop,
    write_doc_subsection,
)

from core.models import build

BENCH = Path(__file__).resolve().parent
SATURATION_RATES = (100, 200, 300, 400, 600, 800, 1000, 1500, 2000)
TARGET_P99_MS, SATURATED_P99_MS = 25.0, 100.0


@contextmanager
def server(variant: str, directory: Path) -> Iterator[str]:
    """A running server for `variant`; yields the URL to poll (a running job's, when it has one)."""
    log = directory / f"{variant}.log"
    if variant == "bare":
        port = free_port()
        process = start_process(
            [
                str(Path(sys.executable).with_name("uvicorn")),
                "--app-dir",
                str(BENCH),
                "bare_app:app",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            {"BARE_DB": str(directory / "bare.sqlite3")},
            log,
            f"http://127.0.0.1:{port}/healthz",
        )
        try:
            yield f"http://127.0.0.1:{port}/v1/jobs/job_bare"
        finally:
            stop(process)
        return
    env = {"DFKD_DATA_DIR": str(directory / variant)}
    with postgres_database() if variant == "postgres" else _nothing() as database_url:
        if database_url:
            env["DFKD_DATABASE_URL"] = database_url
        process, base = start_api(env, log, migrate=bool(database_url))
        try:
            with httpx.Client(base_url=base, timeout=30) as client:
                if variant == "idle":
                    yield f"{base}/v1/jobs/{_job(client, directory, iterations=1)}"
                    return
                job_id = _job(client, directory, iterations=1_000_000)
                try:
                    yield f"{base}/v1/jobs/{job_id}"
                    final = client.get(f"/v1/jobs/{job_id}").json()
                    if final["status"] != "running":
                        raise RuntimeError(f"the job stopped during the load: {final}")
                    print(f"  job still running at step {final['progress']['iteration']}")
                finally:
                    client.post(f"/v1/jobs/{job_id}/cancel")
        finally:
            stop(process)


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def _job(client: httpx.Client, directory: Path, iterations: int) -> str:
    """Upload a (random-weight) LeNet-5 and start a ZSKT job; wait until it trains (or ends)."""
    weights = directory / "teacher.safetensors"
    if not weights.exists():
        save_file(build("lenet5").state_dict(), str(weights))
    with weights.open("rb") as handle:
        teacher = client.post(
            "/v1/teachers", files={"file": handle}, data={"architecture": "lenet5"}
        )
    teacher.raise_for_status()
    job = client.post(
        "/v1/jobs",
        json={
            "teacher_id": teacher.json()["id"],
            "student": {"architecture": "lenet5_half"},
            "iterations": iterations,
            "batch_size": 128,
            "hyperparameters": {"generator_width": 32, "log_every": 10},
            "sample_every": 50,
            "checkpoint_every": 200,
        },
    )
    job.raise_for_status()
    job_id = job.json()["id"]
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        current = client.get(f"/v1/jobs/{job_id}").json()
        ended = current["status"] not in {"queued", "running"}
        if ended or (iterations > 1 and current["progress"]["iteration"] > 0):
            return job_id  # a long job is training; a one-step job (idle variant) has ended
        time.sleep(0.5)
    raise TimeoutError(f"the job neither trained nor ended in 600 s: {current}")


def load(url: str, rate: float, duration: float) -> dict:
    """bench/loadgen.py in its own process."""
    output = subprocess.run(
        [
            sys.executable,
            str(BENCH / "loadgen.py"),
            url,
            "--rate",
            str(rate),
            "--duration",
            str(duration),
            "--pollers",
            "100",
        ],
        capture_output=True,
        text=True,
        timeout=duration + 120,
        check=True,
    )
    return json.loads(output.stdout)


def measure(variant: str, duration: float, step_duration: float, directory: Path) -> dict:
    with server(variant, directory) as url:
        steady = load(url, 100, duration)
        print(f"{variant}: 100 req/s for {duration:.0f} s: {_short(steady)}", flush=True)
        steps = []
        for rate in SATURATION_RATES:
            result = load(url, rate, step_duration)
            steps.append(result)
            print(f"  {rate} req/s: {_short(result)}", flush=True)
            if not _held(result):
                break
    held = [step["rate"] for step in steps if _held(step)]
    return {"steady": steady, "saturation": steps, "max_sustained_rate": int(max(held, default=0))}


def _held(result: dict) -> bool:
    return (
        result["p99_ms"] <= SATURATED_P99_MS
        and result["errors"] == 0
        and result["achieved_rate"] >= 0.95 * result["rate"]
    )


def _short(result: dict) -> str:
    return (
        f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, max {result['max_ms']:.0f} ms, "
        f"{result['count']} requests, {result['errors']} errors"
    )


DESCRIPTIONS = {
    "bare": "bare FastAPI + SQLite endpoint, no job",
    "idle": "`dfkd serve`, embedded default (SQLite), no job",
    "sqlite": "`dfkd serve`, embedded default (SQLite), a job training",
    "postgres": "`dfkd serve` on PostgreSQL, embedded runner process, a job training",
}


def report(results: dict[str, dict], duration: float, step_duration: float, info: dict) -> str:
    rows = "\n".join(
        f"| {DESCRIPTIONS[variant]} | {r['steady']['p50_ms']:.1f} | {r['steady']['p99_ms']:.1f} | "
        f"{r['steady']['max_ms']:.0f} | {r['steady']['errors']} | {r['max_sustained_rate']} |"
        for variant, r in results.items()
    )
    return f"""`{command_line()}`

{machine_line(info)}

GET /v1/jobs/{{id}} at 100 req/s (100 connections, open loop: latency from each request's due
time) for {duration:.0f} s, from bench/loadgen.py in its own process on the same machine. The job:
ZSKT LeNet-5 -> LeNet-5-half, batch 128, metrics every 10 steps, samples every 50, checkpoints
every 200, in the embedded runner (a child process of `dfkd serve` at nice +10). Saturation: {step_duration:.0f} s steps at
{", ".join(map(str, SATURATION_RATES))} req/s until p99 > {SATURATED_P99_MS:.0f} ms, an error, or
the achieved rate < 95% of the asked one. Target: p99 < {TARGET_P99_MS:.0f} ms at 100 req/s.

| server | p50 ms | p99 ms | max ms | errors | saturation req/s |
|---|---|---|---|---|---|
{rows}
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds at 100 req/s")
    parser.add_argument("--step-duration", type=float, default=10.0, help="per saturation step")
    parser.add_argument(
        "--variants", nargs="+", choices=list(DESCRIPTIONS), default=list(DESCRIPTIONS)
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    info = machine()
    results = {}
    with tempfile.TemporaryDirectory(prefix="dfkd-bench-") as tmp:
        for variant in args.variants:
            results[variant] = measure(variant, args.duration, args.step_duration, Path(tmp))
    body = report(results, args.duration, args.step_duration, info)
    print(body)
    if not args.no_write:
        save_results("polling", {"machine": info, "command": command_line(), **results})
        write_doc_subsection("Polling: GET /v1/jobs/{id} while a job runs", body)


if __name__ == "__main__":
    main()
