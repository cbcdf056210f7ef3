"""A process's peak resident memory, resettable (Linux /proc): how tests bound allocations. The
test process by default, or another process of the same user (a `dfkd serve`) by its pid."""

from __future__ import annotations

from pathlib import Path

CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_rss(pid: int | str = "self") -> None:
    """Make the peak equal to the current resident size."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")
