"""A process's peak resident memory, resettable (Linux /proc): how tests bound allocations. The
test process by default, or another process of the same user (a `dfkd serve`) by its pid."""

from __future__ import annotations

import contextlib
import ctypes
from pathlib import Path

CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_rss(pid: int | str = "self") -> None:
    """Make the peak equal to the current resident size."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def release_freed_memory() -> None:
    """Hand this process's freed heap back to the kernel: after a job ran in the process it is
    kept (core/allocator.py), and a measured request would reuse it unseen instead of growing
    the resident size."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing kept to release
        ctypes.CDLL(None).malloc_trim(0)


def peak_rss(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")
