"""The API's memory and time for the hostile model, archive and header requests of issue 20,
against a real `dfkd serve` (embedded default, a temporary folder), at the issue's scale.

    .venv/bin/python bench/hostile_memory.py            # ~1 min on 2 cores; prints a table
    .venv/bin/python bench/hostile_memory.py --quick    # smaller bomb and teacher, ~20 s

For each request: the answer (status, error code, body size), the wall time, and the API
process's peak RSS growth (VmHWM after the request minus VmRSS before; the peak is reset through
/proc/<pid>/clear_refs first). Then the forward-check estimate (core.models.forward_peak_bytes)
beside the measured peak of the same forward pass, in this process, for a few registry models.
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import torch
from safetensors.torch import save
from service_harness import machine, machine_line, memory_kib, start_api, stop

from core.datasets import LabelledImages
from core.metadata import metadata_bytes, record_metadata
from core.models import build, forward_peak_bytes, get_spec

MiB = 1024 * 1024


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def measure(pid: int, send: Callable[[], httpx.Response]) -> tuple[httpx.Response, float, float]:
    """(answer, seconds, peak RSS growth in MiB) of one request."""
    reset_peak(pid)
    before = memory_kib(pid)["VmRSS"]
    started = time.perf_counter()
    response = send()
    seconds = time.perf_counter() - started
    return response, seconds, (memory_kib(pid)["VmHWM"] - before) / 1024


def weights(model: torch.nn.Module) -> bytes:
    return save({name: tensor.contiguous() for name, tensor in model.state_dict().items()})


def npz_bomb(mebibytes: int) -> bytes:
    buffer = io.BytesIO()
    images = np.zeros((mebibytes, 1, 1024, 1024), np.uint8)
    np.savez_compressed(buffer, images=images, labels=np.zeros(mebibytes, np.int64))
    return buffer.getvalue()


def header_bomb(megabytes: int) -> bytes:
    header = {f"t{i:07d}" + "x" * 200: {"dtype": "Q99", "shape": [1], "data_offsets": [0, 4]}
              for i in range(megabytes * 1_000_000 // 260)}  # fmt: skip
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\0" * 4


def record_for(model: torch.nn.Module, shape: tuple[int, ...]) -> bytes:
    images = torch.randn(40, *shape, generator=torch.Generator().manual_seed(1))
    data = LabelledImages(images, torch.arange(40) % 10)
    return metadata_bytes(record_metadata(model, data, "all_layers"))


def attacks(client: httpx.Client, quick: bool) -> list[tuple[str, Callable[[], httpx.Response]]]:
    wrn = weights(build("wrn"))  # WRN-16-1 at 32 px, 700 KB
    lenet = build("lenet5")
    lenet_id = client.post(
        "/v1/teachers",
        files={"file": ("t", weights(lenet))},
        data={"architecture": "lenet5"},
    ).json()["id"]
    size = 64 if quick else 128
    hinton = build("hinton1200", image_size=size).eval()
    hinton_id = client.post(
        "/v1/teachers",
        files={"file": ("t", weights(hinton))},
        data={
            "architecture": "hinton1200",
            "architecture_kwargs": json.dumps({"image_size": size}),
        },
    ).json()["id"]
    hinton_mb = sum(t.numel() for t in hinton.state_dict().values()) * 4 / 1e6
    record = record_for(hinton, (1, size, size))
    bomb_mib = 128 if quick else 512
    bomb = npz_bomb(bomb_mib)
    header = header_bomb(5 if quick else 21)

    def teacher(content: bytes, architecture: str, kwargs: dict) -> Callable[[], httpx.Response]:
        return lambda: client.post(
            "/v1/teachers",
            files={"file": ("t", content)},
            data={"architecture": architecture, "architecture_kwargs": json.dumps(kwargs)},
        )

    def job(**body: object) -> Callable[[], httpx.Response]:
        return lambda: client.post(
            "/v1/jobs", json={"teacher_id": lenet_id, "iterations": 10, **body}
        )

    return [
        ("2. teacher WRN-16-1 image_size 1536", teacher(wrn, "wrn", {"image_size": 1536})),
        ("3. student WRN widen_factor 110", job(student={"architecture": "wrn", "kwargs": {"widen_factor": 110}})),
        ("3. student WRN-100-20 (5.9e8 parameters)", job(student={"architecture": "wrn", "kwargs": {"depth": 100, "widen_factor": 20}})),
        ("4. teacher WRN depth 12004", teacher(wrn, "wrn", {"depth": 12004})),
        (f"6. npz bomb: {len(bomb) // 1024} KB of {bomb_mib} MiB zeros", lambda: client.post("/v1/datasets", files={"file": ("d.npz", bomb)})),
        (f"7. safetensors header of {len(header) / 1e6:.0f} MB", teacher(header, "lenet5", {})),
        ("9. lopes samples 10 000 000", job(method="lopes", student={"architecture": "lenet5_half"}, hyperparameters={"samples": 10_000_000})),
        (f"10. PUT metadata on a {hinton_mb:.0f} MB teacher", lambda: client.put(f"/v1/teachers/{hinton_id}/metadata", files={"metadata": ("m", record)})),
    ]  # fmt: skip


def forward_estimates() -> list[tuple[str, float, float]]:
    """(model, estimate MiB, measured peak growth MiB) of the upload's forward check (batch 2)."""
    rows = []
    cases = [
        ("wrn", {"depth": 16, "image_size": 256}),
        ("wrn", {"depth": 40, "widen_factor": 2, "image_size": 128}),
        ("resnet34", {"image_size": 224}),
        ("alexnet", {"image_size": 512}),
        ("lenet5", {"image_size": 512}),
    ]
    for architecture, kwargs in cases:
        shape = get_spec(architecture).input_shape(**kwargs)
        with torch.device("meta"):
            estimate = forward_peak_bytes(build(architecture, **kwargs), shape, 2)
        model = build(architecture, **kwargs).eval()
        with torch.no_grad():
            build(architecture, **{**kwargs, "image_size": 32}).eval()(
                torch.zeros(2, shape[0], 32, 32)
            )
            Path("/proc/self/clear_refs").write_text("5")
            before = memory_kib_self()
            model(torch.zeros(2, *shape))
            growth = (memory_kib_self() - before) / 1024
        label = f"{architecture} {kwargs}"
        rows.append((label, estimate / MiB, growth))
    return rows


def memory_kib_self() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller bomb and teacher")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(machine_line(machine()))
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        api, base = start_api({"DFKD_DATA_DIR": str(root / "data")}, root / "api.log", migrate=True)
        try:
            with httpx.Client(base_url=base, timeout=600) as client:
                rows = []
                for label, send in attacks(client, args.quick):
                    response, seconds, growth = measure(api.pid, send)
                    code = response.json().get("error", {}).get("code", "")
                    rows.append(
                        (label, response.status_code, code, len(response.content), seconds, growth)
                    )
        finally:
            stop(api)
    print("\n| request | answer | body bytes | time | API peak RSS growth |")
    print("|---|---|---|---|---|")
    for label, status, code, body, seconds, growth in rows:
        print(f"| {label} | {status} `{code}` | {body} | {seconds:.2f} s | {growth:.1f} MiB |")
    print("\n| forward check (batch 2) | estimate | measured peak growth |")
    print("|---|---|---|")
    for label, estimate, growth in forward_estimates():
        print(f"| {label} | {estimate:.0f} MiB | {growth:.0f} MiB |")
    print(f"\ncommand: .venv/bin/python {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
