"""Where an experiment's runs execute: the one seam a launcher plugs into.

A launcher takes a picklable function and a list of tasks and returns the results in the tasks' order.
`local` runs them on this machine: in this process for one job, else in a pool of processes with one
torch thread each. `ray` (reproduce/ray_launcher.py) is another class with the same `map`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch

from iat.errors import UsageError

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
LAUNCHERS = ("local", "ray")


class Launcher(Protocol):
    jobs: int

    def map(self, fn: Callable[[T], R], tasks: Sequence[T]) -> list[R]: ...


def default_jobs(device: str) -> int:
    """On a CPU, one single-threaded process per core beats one process using every core for
    models this small (measured: benchmarks/demo_parallel.py); on a GPU, one process."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, 6))


def _one_thread() -> None:
    torch.set_num_threads(1)


@dataclass
class LocalLauncher:
    jobs: int = 1

    def map(self, fn: Callable[[T], R], tasks: Sequence[T]) -> list[R]:
        if self.jobs == 1 or len(tasks) <= 1:
            return [fn(t) for t in tasks]
        log.info("%d runs, %d at a time, one thread each", len(tasks), self.jobs)
        # spawn, not fork: a forked child would inherit torch's thread pools and locks mid-use
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.jobs, mp_context=context, initializer=_one_thread) as pool:
            futures = [pool.submit(fn, t) for t in tasks]
            return [f.result() for f in futures]


def make_launcher(name: str = "local", jobs: int | None = None, device: str = "auto",
                  address: str | None = None) -> Launcher:
    """The launcher called `name` with `jobs` workers (None: one per CPU core, 1 on a GPU); `address`: the
    Ray cluster of `ray` (None: a local Ray it starts and stops)."""
    if name not in LAUNCHERS:
        raise UsageError(f"--launcher {name!r}: choose one of {', '.join(LAUNCHERS)}")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise UsageError(f"--jobs {jobs!r} must be a whole number of at least 1")
    if name == "ray":
        from iat.reproduce.ray_launcher import RayLauncher

        return RayLauncher(jobs, address, device)
    if address is not None:
        raise UsageError("--ray-address needs --launcher ray")
    return LocalLauncher(jobs or default_jobs(device))
