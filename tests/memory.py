"""The test process's peak resident memory, resettable (Linux /proc): how tests bound allocations."""

from __future__ import annotations

from pathlib import Path

CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_rss() -> None:
    """Make the peak equal to the current resident size."""
    CLEAR_REFS.write_text("5")


def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")
