"""Where an experiment's runs execute: the one seam a launcher plugs into.

A launcher takes a picklable function and a list of tasks and returns the results in the tasks' order.
`local` runs them on this machine: in this process for one job, else in a pool of processes with one
torch thread each. `ray` (reproduce/ray_launcher.py) is another class with the same `map`.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch

from iat.errors import UsageError

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
LAUNCHERS = ("local", "ray")
SIGNALS = (signal.SIGINT, signal.SIGTERM)


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


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the launcher: running runs wrote their checkpoints, none started after it.

    `signum` gives the exit code (128 + signum: 130 for Ctrl-C, 143 for SIGTERM).
    """

    def __init__(self, signum: int):
        super().__init__(f"{signal.Signals(signum).name}: stopped; every run wrote its checkpoint; "
                         "continue with the same command")
        self.signum = signum


@dataclass
class _Interrupted:
    """What a worker returns for a task a signal stopped (exceptions with extra fields do not unpickle)."""

    signum: int


_stop_signal: int | None = None  # in a worker: the signal that asked it to stop


def _worker_start() -> None:
    """A pool worker: one torch thread; its own process group, so a Ctrl-C at the terminal reaches only the
    parent, which passes it on exactly once; a signal between runs means: start no more runs."""
    torch.set_num_threads(1)
    os.setpgrp()
    for sig in SIGNALS:
        signal.signal(sig, _note_stop)


def _note_stop(signum, frame) -> None:
    global _stop_signal
    _stop_signal = signum


def _guarded(fn: Callable[[T], R], task: T) -> R | _Interrupted:
    """Run `fn(task)` in a worker, unless a signal came first; an interrupted run becomes _Interrupted."""
    global _stop_signal
    if _stop_signal is not None:
        return _Interrupted(_stop_signal)
    try:
        return fn(task)
    except KeyboardInterrupt as e:  # training's SignalGuard wrote a checkpoint, then raised
        _stop_signal = getattr(e, "signum", signal.SIGINT)
        return _Interrupted(_stop_signal)


@dataclass
class LocalLauncher:
    """Runs tasks here: in this process for one job, else in a pool of `jobs` processes.

    Ctrl-C or SIGTERM stops it cleanly: the signal is passed on to every worker (training finishes its
    step and writes a checkpoint), no task starts after it, every worker ends, then `Stopped` is raised.
    """

    jobs: int = 1

    def map(self, fn: Callable[[T], R], tasks: Sequence[T]) -> list[R]:
        if self.jobs == 1 or len(tasks) <= 1:
            return self._map_here(fn, tasks)
        log.info("%d runs, %d at a time, one thread each", len(tasks), self.jobs)
        # spawn, not fork: a forked child would inherit torch's thread pools and locks mid-use
        context = multiprocessing.get_context("spawn")
        stop: list[int] = []
        pool = ProcessPoolExecutor(self.jobs, mp_context=context, initializer=_worker_start)

        def on_signal(signum, frame) -> None:
            if not stop:
                log.info("%s: stopping every run after its current step", signal.Signals(signum).name)
            stop.append(signum)
            for pid in list(pool._processes or {}):  # each worker's training writes its checkpoint
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)

        previous = {}
        with contextlib.suppress(ValueError):  # not the main thread: signals stay the caller's business
            previous = {sig: signal.signal(sig, on_signal) for sig in SIGNALS}
        try:
            futures = [pool.submit(_guarded, fn, t) for t in tasks]
            wait(futures)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            pool.shutdown(wait=True, cancel_futures=True)
        results = [f.result() for f in futures]
        interrupted = [r.signum for r in results if isinstance(r, _Interrupted)]
        if stop or interrupted:
            raise Stopped(stop[0] if stop else interrupted[0])
        return results

    def _map_here(self, fn: Callable[[T], R], tasks: Sequence[T]) -> list[R]:
        """One task after another in this process; a signal between tasks stops before the next one
        (during training, its SignalGuard takes the signal, checkpoints and raises TrainingInterrupted)."""
        stop: list[int] = []
        previous = {}
        with contextlib.suppress(ValueError):  # not the main thread: signals stay the caller's business
            previous = {sig: signal.signal(sig, lambda signum, frame: stop.append(signum)) for sig in SIGNALS}
        try:
            results = []
            for task in tasks:
                if stop:
                    raise Stopped(stop[0])
                results.append(fn(task))
            if stop:
                raise Stopped(stop[0])
            return results
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


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
