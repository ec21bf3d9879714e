"""Keep the memory of freed activations in the process on CPU (glibc ``mallopt``).

torch's CPU tensors come from the C library's ``malloc``. Every batch allocates the model's
activations and frees them at the end of the forward pass. With glibc's defaults, blocks over the
mmap threshold (128 KiB, raised dynamically to at most 32 MiB) are mapped and unmapped on every
batch, and free memory above the trim threshold at the top of the heap is handed back to the
kernel; either way the next batch touches fresh pages and pays one minor page fault per 4 KiB.
On the papers' LeNet at batch 1024 that is about 46 page faults per sample, and on a CIFAR
ResNet-20 about 300 per sample at batches 64 and 256 and 970 at 1024 (docs/benchmarks.md), paid
in system time on every batch.

:func:`retain_freed_memory` sets ``M_MMAP_MAX = 0`` (large blocks come from the heap) and a 1 GiB
trim threshold, so a process keeps, and reuses, the memory of its largest batch instead of
returning it to the kernel between batches; the resident size stays at the run's high-water
mark. torch has no CPU caching allocator to configure from Python, so the C library's is the
root. The engine calls it once per process before its first CPU batch; it does nothing on other
C libraries, and nothing when the user configured malloc through the environment
(``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_MAX_``, ``MALLOC_MMAP_THRESHOLD_``,
``GLIBC_TUNABLES``), which then wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["TRIM_THRESHOLD", "retain_freed_memory"]

# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
TRIM_THRESHOLD = 1 << 30
_USER_SETTINGS = (
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_MAX_",
    "MALLOC_MMAP_THRESHOLD_",
    "GLIBC_TUNABLES",
)

_state: dict[str, bool] = {}


def retain_freed_memory() -> bool:
    """Make glibc keep freed blocks in the process (once per process); True if it is set.

    False on a platform without glibc, when ``mallopt`` refused, or when the environment
    already configures malloc (the user's setting is kept).
    """
    if "applied" not in _state:
        _state["applied"] = _apply()
    return _state["applied"]


def _apply() -> bool:
    if not sys.platform.startswith("linux") or any(name in os.environ for name in _USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: not glibc's malloc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
