"""glibc's allocator set for a run that streams 1 MiB buffers through several threads.

A squash hands megabyte buffers between threads (read ahead, inflate, hash, spool, deflate). With
glibc's defaults each thread's arena gives freed buffers back to the kernel and takes fresh pages for
the next, so the kernel zero-fills every buffer again: on the bench's byte-heavy image that was 47,000
page faults and 0.6-0.9 s of system time per squash. Keeping freed memory for reuse (a high trim
threshold, a fixed mmap threshold above the buffer size) and two arenas cut the faults to 15,000 and
the CPU by 5-8% (bench/README.md, "The allocator"). Peak memory is what the run touches either way.

The CLI calls ``tune`` once at start; the library leaves the process's allocator alone. A user's own
``MALLOC_*`` settings win: nothing is changed when one is set. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

SETTINGS = ((M_ARENA_MAX, 2), (M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 256 << 20))
"""mallopt's options and values: two arenas; buffers up to 32 MiB from the heap; 256 MiB kept free."""


def tune() -> bool:
    """Apply ``SETTINGS`` with glibc's ``mallopt``; whether they were applied."""
    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (glibc's own symbol: musl's mallopt is a stub)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return all(mallopt(option, value) == 1 for option, value in SETTINGS)
