"""CPU memory: keep the memory of freed tensors in the process instead of handing it back to the OS.

glibc's malloc serves large blocks with fresh pages from mmap and gives freed memory at the top of
the heap back to the OS. A training step on the CPU allocates and frees activations of several MiB
hundreds of times, so without this every step faults in its memory page by page again: 357,000 minor
page faults per IAT step of PreActResNet18 at batch 64 on 28x28 images, about a tenth of its time
(benchmarks/README.md). Raising glibc's two thresholds lets freed blocks be reused, as jemalloc or
tcmalloc would (PyTorch's CPU performance guide suggests preloading one of them). Arithmetic is
unchanged; the process keeps its peak memory until it exits.
"""

from __future__ import annotations

import ctypes
import functools
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD_MAX = 32 * 2**20  # the largest value glibc accepts on 64-bit: blocks up to it come from the heap
TRIM_THRESHOLD = 2**31 - 1  # free memory at the heap's top is returned to the OS only above 2 GiB

@functools.cache  # once per process
def keep_freed_memory() -> bool:
    """Tune glibc's malloc so freed tensor memory is reused; return whether it applies (False off Linux,
    or with another C library; jemalloc or tcmalloc preloaded make it moot)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a C library without mallopt (musl)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
