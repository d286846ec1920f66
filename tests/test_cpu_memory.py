"""iat.cpu_memory: freed tensor memory is reused, not faulted in again page by page on every step."""

from __future__ import annotations

import subprocess
import sys

import pytest

from iat.cpu_memory import keep_freed_memory

# A step's pattern: many activations of a few MiB allocated, then all freed; count the minor page faults
# of one such round after a few warm-up rounds, in a fresh process (malloc's state is per process).
ROUNDS = """
import resource, sys, torch
if sys.argv[1] == "keep":
    from iat.cpu_memory import keep_freed_memory
    assert keep_freed_memory()
def one_round():
    acts = [torch.ones(1024, 1024) for _ in range(24)]  # 24 blocks of 4 MiB
    del acts
for _ in range(3):
    one_round()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
one_round()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES_PER_ROUND = 24 * 4 * 2**20 // 4096


def faults(mode: str) -> int:
    return int(subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True)
               .stdout.split()[-1])


@pytest.mark.skipif(not keep_freed_memory(), reason="glibc's mallopt is not available here")
def test_freed_tensor_memory_is_reused_instead_of_faulted_in_again():
    assert faults("default") > PAGES_PER_ROUND // 2  # glibc as it comes: each round faults its pages in anew
    assert faults("keep") < PAGES_PER_ROUND // 20


def test_keeping_freed_memory_is_idempotent():
    assert keep_freed_memory() == keep_freed_memory()
