"""An open-loop HTTP load generator: GETs on a fixed timetable, latency from the scheduled time.

    .venv/bin/python bench/loadgen.py URL --rate 100 --duration 60 [--pollers 100]

Run as its own process (bench/polling.py starts it) so it never shares a process with the API.
`pollers` clients, each with its own keep-alive connection, poll at rate / pollers per second,
phase-shifted so that together one request is due every 1 / rate seconds. Each request's latency
runs from its due time to the end of the response, so a stalled server shows as latency rather
than as fewer requests (no coordinated omission). A bare asyncio HTTP/1.1 client, because httpx's
AsyncClient with 100 connections could not itself sustain 50 req/s here. Prints one JSON object:
count, errors, achieved rate and latency percentiles in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from urllib.parse import urlsplit


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


class Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol for GETs."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.request = (
            f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
            f"Host: {parts.netloc}\r\nAccept: application/json\r\n\r\n"
        ).encode()
        self.timeout = timeout
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self) -> int:
        """One request; returns the status code. Reconnects after any failure."""
        try:
            return await asyncio.wait_for(self._get(), self.timeout)
        except BaseException:
            self.close()
            raise

    async def _get(self) -> int:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
        length = next(
            (v for k, v in headers.items() if k.strip().lower() == "content-length"), None
        )
        if length is None:
            raise ConnectionError("response without Content-Length")
        await reader.readexactly(int(length))
        return status

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def poller(
    url: str,
    first_due: float,
    interval: float,
    end: float,
    timeout: float,
    latencies: list[float],
    errors: list[str],
) -> None:
    """Requests due at first_due + k * interval until `end`; latency counted from each due time.
    A request that is late because the previous one was slow is measured from when it was due."""
    connection = Connection(url, timeout)
    due = first_due
    try:
        while due < end:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                status = await connection.get()
                if status != 200:
                    errors.append(f"HTTP {status}")
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as error:
                errors.append(type(error).__name__)
            latencies.append(time.perf_counter() - due)
            due += interval
    finally:
        connection.close()


async def run(url: str, rate: float, duration: float, pollers: int, timeout: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    interval = pollers / rate  # each poller's period; together `rate` requests per second
    start = time.perf_counter() + 0.5
    end = start + duration
    await asyncio.gather(
        *(
            poller(url, start + i * interval / pollers, interval, end, timeout, latencies, errors)
            for i in range(pollers)
        )
    )
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "rate": rate,
        "duration": duration,
        "count": len(latencies),
        "achieved_rate": len(latencies) / elapsed,
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "p50_ms": percentile(ordered, 0.50) * 1000,
        "p90_ms": percentile(ordered, 0.90) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "max_ms": ordered[-1] * 1000 if ordered else math.nan,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds")
    parser.add_argument("--pollers", type=int, default=100, help="concurrent connections")
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    args = parser.parse_args()
    print(
        json.dumps(asyncio.run(run(args.url, args.rate, args.duration, args.pollers, args.timeout)))
    )


if __name__ == "__main__":
    main()
