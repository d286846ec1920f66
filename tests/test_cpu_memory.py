"""iat.cpu_memory: freed tensor memory stays in the process for the next step instead of going back to the OS."""

from __future__ import annotations

import subprocess
import sys

import pytest

from iat.cpu_memory import keep_freed_memory

# In a fresh process (malloc's state is per process): where a 16 MiB tensor comes from (bytes in mmap'd
# blocks, glibc's mallinfo2().hblkhd) and how much the heap grew and still holds once it is freed (.arena).
WHERE = """
import ctypes, sys, torch
FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = Mallinfo2
if sys.argv[1] == "keep":
    from iat.cpu_memory import keep_freed_memory
    assert keep_freed_memory()
before = mallinfo2()
x = torch.ones(4 * 2**20)
mmapped = mallinfo2().hblkhd - before.hblkhd
del x
print(mmapped, mallinfo2().arena - before.arena)
"""
BLOCK = 16 * 2**20


def where_a_block_lives(mode: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", WHERE, mode], capture_output=True, text=True, check=True).stdout
    mmapped, heap_kept = out.split()
    return int(mmapped), int(heap_kept)


def glibc_with_mallinfo2() -> bool:
    import ctypes

    return keep_freed_memory() and hasattr(ctypes.CDLL(None), "mallinfo2")


@pytest.mark.skipif(not glibc_with_mallinfo2(), reason="glibc's mallopt and mallinfo2 are not available here")
def test_a_freed_activation_stays_in_the_heap_instead_of_going_back_to_the_os():
    mmapped, _ = where_a_block_lives("default")
    assert mmapped >= BLOCK  # glibc as it comes: a fresh mmap for the block, unmapped (and faulted in anew) later
    mmapped, heap_kept = where_a_block_lives("keep")
    assert mmapped == 0 and heap_kept >= BLOCK  # from the heap, and still there after it was freed
