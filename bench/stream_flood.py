"""A flood of open event streams against one `dfkd serve`: does the rest of the API still answer?

    .venv/bin/python bench/stream_flood.py                        # 200 streams, SQLite, ~1 min
    .venv/bin/python bench/stream_flood.py --database postgres    # on a throwaway PostgreSQL database
    .venv/bin/python bench/stream_flood.py --streams 50 --seconds 10 --no-write   # a quick check

Loopback only, bounded in count and time. The server is `dfkd serve` with a Redis broker on a
private queue that no worker consumes, so the job stays queued, as in the issue's reproduction
(streams that wait for a job are the ones that used to hold a thread and a connection each).
Streams are opened as raw sockets that read the response head and then sit; the figures are the
latency of `/healthz`, `GET /v1/teachers` and `GET /v1/jobs/{id}` measured one request after the
other while they are open, and the open-stream gauge from /metrics.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import redis
from polling import postgres_database
from service_harness import (
    command_line,
    machine,
    machine_line,
    save_results,
    start_api,
    stop,
    write_doc_subsection,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.processes import start_tiny_job
from tests.sse_clients import open_stream

REDIS_URL = "redis://127.0.0.1:6379/0"


def latencies_ms(client: httpx.Client, path: str, seconds: float) -> list[float]:
    """One request after the other for `seconds`; each one's latency in ms (failures raise)."""
    figures = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        response = client.get(path)
        response.raise_for_status()
        figures.append((time.perf_counter() - started) * 1000)
    return figures


def summary(figures: list[float]) -> dict[str, float]:
    ordered = sorted(figures)
    return {
        "count": len(ordered),
        "p50_ms": round(statistics.median(ordered), 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
        "max_ms": round(ordered[-1], 1),
    }


def open_gauge(client: httpx.Client) -> float:
    text = client.get("/metrics").text
    line = next(line for line in text.splitlines() if line.startswith("dfkd_event_streams_open "))
    return float(line.split()[1])


@contextmanager
def nothing() -> Iterator[None]:
    yield None


def run(streams: int, seconds: float, database: str, directory: Path) -> dict:
    queue = f"bench-flood-{int(time.time())}"
    env = {
        "DFKD_DATA_DIR": str(directory / "data"),
        "DFKD_BROKER_URL": REDIS_URL,
        "DFKD_CELERY_QUEUE": queue,  # no worker consumes it: the job stays queued
        "DFKD_MAX_EVENT_STREAMS": str(streams),
        "DFKD_MAX_EVENT_STREAMS_PER_TENANT": str(streams),
        "DFKD_S3_ENDPOINT": "",
    }
    with ExitStack() as stack:
        url = stack.enter_context(postgres_database() if database == "postgres" else nothing())
        if url:
            env["DFKD_DATABASE_URL"] = url
        process, base = start_api(env, directory / "serve.log", migrate=bool(url))
        stack.callback(stop, process)
        stack.callback(lambda: redis.Redis.from_url(REDIS_URL).delete(queue))
        client = stack.enter_context(httpx.Client(base_url=base, timeout=60))
        job_id = start_tiny_job(client)
        quiet = {path: summary(latencies_ms(client, path, 3)) for path in ("/healthz",)}
        opened_at = time.perf_counter()
        sockets = []
        for _ in range(streams):
            status, sock = open_stream(base, job_id)
            stack.callback(sock.close)
            if status != 200:
                raise RuntimeError(f"stream {len(sockets) + 1} got {status}")
            sockets.append(sock)
        open_seconds = time.perf_counter() - opened_at
        status, extra = open_stream(base, job_id)
        extra.close()
        flooded = {
            path: summary(latencies_ms(client, path, seconds / 3))
            for path in ("/healthz", "/v1/teachers", f"/v1/jobs/{job_id}")
        }
        gauge = open_gauge(client)
        for sock in sockets:
            sock.close()
        closed_at = time.monotonic()
        while open_gauge(client) > 0 and time.monotonic() - closed_at < 30:
            time.sleep(0.2)
        return {
            "database": database,
            "streams": streams,
            "seconds_to_open_them": round(open_seconds, 2),
            "one_more_stream_status": status,
            "open_streams_gauge": gauge,
            "slots_back_after_close_s": round(time.monotonic() - closed_at, 1),
            "quiet": quiet,
            "flooded": {
                ("GET /v1/jobs/{id}" if path.startswith("/v1/jobs/") else f"GET {path}"): figures
                for path, figures in flooded.items()
            },
            "server_rss_kib": int(
                next(
                    line.split()[1]
                    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines()
                    if line.startswith("VmRSS")
                )
            ),
        }


def report(results: dict) -> str:
    lines = [
        "`dfkd serve` with N open SSE streams on one queued job (raw sockets on loopback), each "
        "route measured one request after the other while they stay open.",
        "",
        "| database | streams | route | requests | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for run_ in results["runs"]:
        for route, figures in {"GET /healthz (no streams)": run_["quiet"]["/healthz"]}.items():
            lines.append(
                f"| {run_['database']} | 0 | {route} | {figures['count']} | {figures['p50_ms']} "
                f"| {figures['p99_ms']} | {figures['max_ms']} |"
            )
        for route, figures in run_["flooded"].items():
            lines.append(
                f"| {run_['database']} | {run_['streams']} | {route} | {figures['count']} | "
                f"{figures['p50_ms']} | {figures['p99_ms']} | {figures['max_ms']} |"
            )
    lines.append("")
    for run_ in results["runs"]:
        lines.append(
            f"- {run_['database']}: {run_['streams']} streams opened in "
            f"{run_['seconds_to_open_them']} s; one more got {run_['one_more_stream_status']} "
            f"(the cap was set to {run_['streams']}); the open-stream gauge read "
            f"{run_['open_streams_gauge']:g}; after the clients closed, every slot was back in "
            f"{run_['slots_back_after_close_s']} s; server RSS {run_['server_rss_kib'] // 1024} MiB."
        )
    lines += ["", machine_line(results["machine"]), "", "```bash", results["command"], "```"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=15, help="measuring time per run")
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if not 1 <= args.streams <= 1000 or not 1 <= args.seconds <= 300:
        parser.error("streams in 1..1000 and seconds in 1..300, to stay bounded")
    results = {"machine": machine(), "command": command_line(), "runs": []}
    databases = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    for database in databases:
        with tempfile.TemporaryDirectory(prefix="dfkd-flood-") as directory:
            results["runs"].append(run(args.streams, args.seconds, database, Path(directory)))
    text = report(results)
    print(text)
    if not args.no_write:
        save_results("stream_flood", results)
        write_doc_subsection("Event stream flood", text)


if __name__ == "__main__":
    main()
