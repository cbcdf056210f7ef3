"""What the service benchmarks share: starting `dfkd serve`, the machine, and docs/benchmarks.md.

Imported by the bench/ scripts as a sibling module (`python bench/<script>.py` puts bench/ first on
the path). Every process started here is stopped by the caller's `finally` or `ExitStack`.
"""

from __future__ import annotations

import json
import os
import platform
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
RESULTS = REPO / "bench" / "results"
DFKD = str(Path(sys.executable).with_name("dfkd"))
SERVICE_HEADING = "## The service"


POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database on the local server for one bench run, dropped afterwards."""
    import psycopg

    name = f"dfkd_bench_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def stop(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_process(
    args: list[str], env: dict[str, str], log: Path, health_url: str, timeout: float = 90
) -> subprocess.Popen[bytes]:
    """Start a server process and wait until `health_url` answers 200 (stopped again on failure)."""
    process = subprocess.Popen(
        args,
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )

    def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{args[0]} exited early:\n{log.read_text()[-3000:]}")
        try:
            return httpx.get(health_url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, timeout, f"{health_url} to answer")
    except BaseException:
        stop(process)
        raise
    return process


def start_api(
    env: dict[str, str], log: Path, migrate: bool = False
) -> tuple[subprocess.Popen[bytes], str]:
    """`dfkd serve` on a free port with `env` (DFKD_DATA_DIR at least); returns it and its URL."""
    port = free_port()
    args = [DFKD, "serve", "--port", str(port), "--log-level", "warning"]
    base = f"http://127.0.0.1:{port}"
    return start_process(
        [*args, "--migrate"] if migrate else args, env, log, f"{base}/healthz"
    ), base


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in {"VmRSS", "VmHWM"}:
            values[name] = int(rest.split()[0])
    return values


def machine() -> dict[str, str | int]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    total_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "nproc": os.cpu_count() or 0,
        "cpu": model,
        "ram_gib": round(total_kib / 1024**2, 1),
        "load_average": " ".join(f"{value:.2f}" for value in os.getloadavg()),
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def machine_line(info: dict[str, str | int]) -> str:
    return (
        f"Machine: {info['nproc']} CPU cores ({info['cpu']}), {info['ram_gib']} GiB RAM, "
        f"Python {info['python']}; load average (1, 5, 15 min) at the start: "
        f"{info['load_average']}; {info['date']}."
    )


def command_line() -> str:
    return " ".join([".venv/bin/python", *(str(arg) for arg in sys.argv)])


def save_results(name: str, results: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def replace_subsection(document: str, heading: str, body: str) -> str:
    """`document` with the `### heading` block inside `## The service` replaced by `body` (or
    appended), creating the top heading and the section when missing. Other sections are kept."""
    if not document.strip():
        document = "# Benchmarks\n"
    if SERVICE_HEADING not in document.splitlines():
        document = document.rstrip("\n") + f"\n\n{SERVICE_HEADING}\n"
    lines = document.splitlines()
    start = lines.index(SERVICE_HEADING)
    end = next(
        (i for i in range(start + 1, len(lines)) if re.match(r"^#{1,2} ", lines[i])), len(lines)
    )
    section = lines[start:end]
    block = [f"### {heading}", "", *body.strip("\n").splitlines(), ""]
    title = f"### {heading}"
    if title in section:
        first = section.index(title)
        last = next(
            (i for i in range(first + 1, len(section)) if section[i].startswith("### ")),
            len(section),
        )
        section[first:last] = block
    else:
        while section and not section[-1].strip():
            section.pop()
        section += ["", *block]
    lines[start:end] = section
    return "\n".join(lines).rstrip("\n") + "\n"


def write_doc_subsection(heading: str, body: str, path: Path = DOC) -> None:
    """Re-read docs/benchmarks.md just before writing, so others' sections edited meanwhile stay."""
    current = path.read_text() if path.exists() else ""
    path.write_text(replace_subsection(current, heading, body))
