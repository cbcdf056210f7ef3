"""How hard a loop drives the machine: FLOPs per iteration, the device's measured peak, memory.

The FLOPs of one iteration are counted once, by running it under PyTorch's FlopCounterMode (which
counts the matmul and convolution FLOPs of the forward and backward passes at the dispatcher);
every later iteration does the same work, so achieved FLOP/s is that count times iterations per
second. The peak is measured, not looked up: a large float32 matmul on the same device.
"""

from __future__ import annotations

import functools
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode


class FlopMeter:
    """Counts one iteration's FLOPs the first time `measure` is entered, then stays out of the way.

    Disabled for compiled forward passes: their fused kernels bypass the dispatcher it counts at.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.per_iteration: int | None = None

    @contextmanager
    def measure(self) -> Iterator[None]:
        if self.per_iteration is not None or not self.enabled:
            yield
            return
        counter = FlopCounterMode(display=False)
        with counter:
            yield
        self.per_iteration = int(counter.get_total_flops())


# what a peak is measured in: float32 arithmetic, float32 through TF32 tensor cores (CUDA), bf16
PEAK_KINDS = ("float32", "tf32", "bfloat16")


@functools.cache
def peak_flops(
    device: str = "cpu", size: int = 1024, seconds: float = 0.5, kind: str = "float32"
) -> float:
    """Matmul FLOP/s on `device` with the current thread settings, measured once per process.

    `kind` (PEAK_KINDS): plain float32 (TF32 off, torch's default for matmuls), float32 with TF32
    allowed, or bf16 operands; on random data, never zeros."""
    if kind not in PEAK_KINDS:
        raise ValueError(f"kind must be one of {PEAK_KINDS}, got {kind!r}")
    target = torch.device(device)
    # a private generator: drawing from the global one would move a running job's random stream
    # and break the bit-exact resume of checkpoints
    draws = torch.Generator(device=target).manual_seed(0)
    dtype = torch.bfloat16 if kind == "bfloat16" else torch.float32
    a = torch.randn(size, size, device=target, generator=draws).to(dtype)
    b = torch.randn(size, size, device=target, generator=draws).to(dtype)
    allowed = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = kind == "tf32"
    try:
        return _best_rate(a, b, target, seconds)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allowed


def _best_rate(a: torch.Tensor, b: torch.Tensor, target: torch.device, seconds: float) -> float:
    size = a.shape[0]
    torch.mm(a, b)  # warm-up: allocation, thread pool start, kernel selection
    _synchronise(target)
    # the best of several short bursts: a burst that shared the cores with other work reads low
    best = 0.0
    for _ in range(5):
        runs, started = 0, time.perf_counter()
        while True:
            torch.mm(a, b)
            runs += 1
            _synchronise(target)
            elapsed = time.perf_counter() - started
            if elapsed >= seconds / 5:
                break
        best = max(best, 2 * size**3 * runs / elapsed)
    return best


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_bytes() -> int:
    """This process's resident memory now (Linux /proc; elsewhere the peak so far)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
