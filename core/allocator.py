"""The C allocator under PyTorch's CPU tensors: keep freed buffers instead of returning them.

A training step allocates and frees the same activation buffers (hundreds of KiB to a few MiB
each) again and again. glibc serves blocks above its mmap threshold with fresh mappings and gives
the top of its heap back to the kernel once enough is free, so every step faults its buffers in
anew: on this project's LeNet loops that was ~25 000 page faults and a tenth of the CPU time in
the kernel per iteration. Fixing both thresholds keeps the buffers in the heap for reuse; resident
memory settles at the loop's working set and stays there (bench/allocator.py measures both).
"""

from __future__ import annotations

import ctypes
import functools
import platform

# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024**2  # glibc's ceiling on 64-bit: larger blocks still get mappings
TRIM_THRESHOLD_BYTES = 1024**3  # free heap kept before any is handed back


@functools.cache
def keep_freed_memory() -> bool:
    """Process-wide and once per process; True where it took effect (glibc), False elsewhere
    (macOS, musl, Windows), where it does nothing."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
