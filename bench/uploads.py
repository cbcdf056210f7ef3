"""Throughput of ~1 GB teacher and dataset uploads, and how much the API process's memory grows.

    .venv/bin/python bench/uploads.py                                 # local + S3, ~1 GB, ~8 min
    .venv/bin/python bench/uploads.py --megabytes 200 --no-write     # a check
    .venv/bin/python bench/uploads.py --stores local --endpoints datasets datasets-npz

The teacher is `hinton1200` (a registry MLP) with in_channels and image_size chosen so that its
safetensors weights reach the asked size (image_size 264, 3 channels: 251 M parameters, 1.00 GB),
written to a temporary folder in 16 MiB chunks and streamed from disk by httpx (never whole in
this process's memory). Each store gets a fresh `dfkd serve`:
- local: the embedded default's blob folder;
- s3:    moto's S3 server (`moto_server`, its own process on loopback). moto buffers what it
         receives itself (large values spill to temporary files), so its RSS grows too; that is
         moto's, listed separately, and not the API's.
The API process's VmRSS is read from /proc before the upload and sampled every 0.1 s during it;
growth = peak during the upload - RSS before. Target: under 50 MB for 1 GB.
`datasets` and `datasets-npz` measure POST /v1/datasets with a labelled-images file of the same
size (float32 images, int64 labels) as safetensors and as an npz (stored members, written in
chunks like the teacher); the API checks both with its streaming reader (core/dataset_scan.py).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import struct
import sys
import tempfile
import threading
import time
import zipfile
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import numpy.lib.format as npy_format
import torch
from service_harness import (
    command_line,
    free_port,
    machine,
    machine_line,
    memory_kib,
    save_results,
    start_api,
    start_process,
    stop,
    write_doc_subsection,
)

from core.models import build

CHUNK = 16 * 1024 * 1024
HIDDEN = 1200  # hinton1200's hidden width


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int], int]]) -> int:
    """A safetensors file of the given (dtype, shape, bytes per element) tensors, filled with small
    finite values, written in chunks; returns its size."""
    header: dict[str, dict] = {}
    offset = 0
    for name, (dtype, shape, width) in tensors.items():
        size = math.prod(shape) * width
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    pattern = struct.pack("<f", 1e-3) * (CHUNK // 4)  # valid float32 and harmless int64 values
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        left = offset
        while left:
            handle.write(pattern[: min(left, CHUNK)])
            left -= min(left, CHUNK)
    return path.stat().st_size


def teacher_file(directory: Path, megabytes: int) -> tuple[Path, dict]:
    """hinton1200 weights of about `megabytes` (10^6 bytes): image_size grows fc1's input."""
    channels = 3
    size = max(8, round(math.sqrt(megabytes * 1e6 / 4 / HIDDEN / channels)))
    kwargs = {"in_channels": channels, "image_size": size}
    with torch.device("meta"):
        model = build("hinton1200", **kwargs)
    tensors = {name: ("F32", list(t.shape), 4) for name, t in model.state_dict().items()}
    path = directory / "teacher.safetensors"
    write_safetensors(path, tensors)
    return path, kwargs


def dataset_file(directory: Path, megabytes: int) -> Path:
    """`images` float32 [N, 1, 32, 32] and int64 `labels` [N] of about `megabytes`."""
    count = max(10, round(megabytes * 1e6 / (32 * 32 * 4 + 8)))
    path = directory / "dataset.safetensors"
    write_safetensors(
        path, {"images": ("F32", [count, 1, 32, 32], 4), "labels": ("I64", [count], 8)}
    )
    return path


def dataset_npz(directory: Path, megabytes: int) -> Path:
    """The same arrays as `dataset_file`, as an npz of stored .npy members written in chunks."""
    count = max(10, round(megabytes * 1e6 / (32 * 32 * 4 + 8)))
    path = directory / "dataset.npz"
    members = {"images": ("<f4", (count, 1, 32, 32), 1e-3), "labels": ("<i8", (count,), 3)}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, (dtype, shape, value) in members.items():
            header = io.BytesIO()
            npy_format.write_array_header_1_0(
                header, {"descr": dtype, "fortran_order": False, "shape": shape}
            )
            block = np.full(CHUNK // np.dtype(dtype).itemsize, value, dtype).tobytes()
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                member.write(header.getvalue())
                left = math.prod(shape) * np.dtype(dtype).itemsize
                while left:
                    member.write(block[: min(left, CHUNK)])
                    left -= min(left, CHUNK)
    return path


class RssSampler:
    """Samples a process's VmRSS in a thread; `peak` is the highest seen (KiB)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = memory_kib(pid)["VmRSS"]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, memory_kib(self.pid)["VmRSS"])

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, memory_kib(self.pid)["VmRSS"])


def start_moto(stack: ExitStack, directory: Path) -> tuple[dict[str, str], int]:
    port = free_port()
    moto = start_process(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        {},
        directory / "moto.log",
        f"http://127.0.0.1:{port}/moto-api/",
    )
    stack.callback(stop, moto)
    env = {
        "DFKD_S3_ENDPOINT": f"127.0.0.1:{port}",
        "DFKD_S3_ACCESS_KEY": "bench-access-key",
        "DFKD_S3_SECRET_KEY": "bench-secret-key",
        "DFKD_S3_BUCKET": "dfkd-bench",
        "DFKD_S3_REGION": "us-east-1",
    }
    return env, moto.pid


def upload(
    store: str, endpoint: str, path: Path, form: dict[str, str], directory: Path
) -> dict[str, float | str | int]:
    with ExitStack() as stack:
        env = {
            "DFKD_DATA_DIR": str(directory / f"{store}-{endpoint}"),
            "DFKD_MAX_UPLOAD_BYTES": str(path.stat().st_size + 2**20),
        }
        moto_pid = None
        if store == "s3":
            s3_env, moto_pid = start_moto(stack, directory)
            env.update(s3_env)
        process, base = start_api(env, directory / f"serve-{store}-{endpoint}.log")
        stack.callback(stop, process)
        client = stack.enter_context(httpx.Client(base_url=base, timeout=1800))
        client.get("/v1/architectures").raise_for_status()  # imports and first request done
        before = memory_kib(process.pid)["VmRSS"]
        moto_before = memory_kib(moto_pid)["VmRSS"] if moto_pid else 0
        with RssSampler(process.pid) as sampler, path.open("rb") as handle:
            started = time.perf_counter()
            response = client.post(
                f"/v1/{endpoint.split('-')[0]}", files={"file": (path.name, handle)}, data=form
            )
            seconds = time.perf_counter() - started
        if response.status_code != 201:
            raise RuntimeError(
                f"{endpoint} upload to {store}: {response.status_code} {response.text}"
            )
        after = memory_kib(process.pid)["VmRSS"]
        size = path.stat().st_size
        return {
            "store": store,
            "endpoint": endpoint,
            "bytes": size,
            "seconds": seconds,
            "mb_per_second": size / 1e6 / seconds,
            "rss_before_mb": before / 1024,
            "rss_peak_growth_mb": (sampler.peak - before) / 1024,
            "rss_after_growth_mb": (after - before) / 1024,
            "moto_rss_growth_mb": (memory_kib(moto_pid)["VmRSS"] - moto_before) / 1024
            if moto_pid
            else math.nan,
        }


def report(results: list[dict], megabytes: int, kwargs: dict, info: dict) -> str:
    rows = "\n".join(
        f"| POST /v1/{r['endpoint'].replace('-', ' (')}{')' if '-' in r['endpoint'] else ''} | {r['store']} | {r['bytes'] / 1e9:.2f} | {r['seconds']:.1f} | "
        f"{r['mb_per_second']:.0f} | {r['rss_peak_growth_mb']:.0f} | {r['rss_after_growth_mb']:.0f} | "
        + ("-" if math.isnan(r["moto_rss_growth_mb"]) else f"{r['moto_rss_growth_mb']:.0f}")
        + " |"
        for r in results
    )
    return f"""`{command_line()}`

{machine_line(info)}

A ~{megabytes} MB teacher: `hinton1200` with architecture_kwargs {json.dumps(kwargs)} (safetensors,
built on disk, streamed from disk by httpx). A ~{megabytes} MB dataset: float32 images
[N, 1, 32, 32] and int64 labels, as safetensors and as an npz of stored members. A fresh
`dfkd serve` per row; its RSS is sampled every 0.1 s. The upload includes the server's spooling to
a temporary file with hashing, the check (teachers: strict state dict + one forward pass;
datasets: the streaming reader, headers then every value in 8 MiB chunks) and the copy to the
store. The S3 server is moto
(`moto_server`, its own process), which buffers uploads itself (large values spill to temporary
files): its growth is moto's, not the API's. Target: API growth under 50 MB.

| endpoint | store | GB | s | MB/s | API RSS peak growth MB | API RSS growth after MB | moto RSS growth MB |
|---|---|---|---|---|---|---|---|
{rows}
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--megabytes", type=int, default=1000)
    parser.add_argument("--stores", nargs="+", choices=["local", "s3"], default=["local", "s3"])
    parser.add_argument(
        "--endpoints",
        nargs="+",
        choices=["teachers", "datasets", "datasets-npz"],
        default=["teachers", "datasets", "datasets-npz"],
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    info = machine()
    results = []
    with tempfile.TemporaryDirectory(prefix="dfkd-bench-") as tmp:
        directory = Path(tmp)
        weights, kwargs = teacher_file(directory, args.megabytes)
        files = {
            "teachers": (
                weights,
                {"architecture": "hinton1200", "architecture_kwargs": json.dumps(kwargs)},
            ),
        }
        if "datasets" in args.endpoints:
            files["datasets"] = (dataset_file(directory, args.megabytes), {})
        if "datasets-npz" in args.endpoints:
            files["datasets-npz"] = (dataset_npz(directory, args.megabytes), {})
        for endpoint in args.endpoints:
            for store in args.stores:
                path, form = files[endpoint]
                results.append(upload(store, endpoint, path, form, directory))
                print(json.dumps(results[-1]), flush=True)
    body = report(results, args.megabytes, kwargs, info)
    print(body)
    if not args.no_write:
        save_results("uploads", {"machine": info, "command": command_line(), "runs": results})
        write_doc_subsection(
            "Uploads: a 1 GB teacher and a 1 GB dataset to the local folder and to S3", body
        )


if __name__ == "__main__":
    main()
