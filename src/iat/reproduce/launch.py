"""Where an experiment's runs execute: the one seam a launcher plugs into.

A launcher takes a picklable function and a list of tasks and returns the results in the tasks' order.
`local` runs them on this machine: in this process for one job, else in a pool of processes with one
torch thread each. `ray` (reproduce/ray_launcher.py) is another class with the same `map`.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Protocol, TypeVar

import torch

from iat.cpu_memory import keep_freed_memory
from iat.errors import UsageError
from iat.reproduce.stopping import SIGNALS, Stopped
from iat.training.faults import TrainingError

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
LAUNCHERS = ("local", "ray")
MAX_RETRIES = 3  # a worker that dies (as Ray's max_retries); an exception raised by the run itself is not retried
PARENT_GONE_GRACE_S = 120.0  # a worker whose parent died stops its run (checkpointing) within this, or exits


class Launcher(Protocol):
    jobs: int

    def map(self, fn: Callable[[T], R], tasks: Sequence[T]) -> list[R]: ...


def on_gpus(device: str) -> int:
    """How many GPUs the runs of `device` use (0: the CPU; --device cuda counts as at least one)."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return max(1, torch.cuda.device_count())
    return 0


def default_jobs(device: str, runs_per_gpu: int = 1) -> int:
    """On a CPU, one single-threaded process per core beats one process using every core for
    models this small (measured: benchmarks/demo_parallel.py); on GPUs, `runs_per_gpu` processes per GPU
    (a batch-64 run leaves much of a large GPU idle)."""
    if on_gpus(device):
        return on_gpus(device) * runs_per_gpu
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, 6))


@dataclass
class _Interrupted:
    """What a worker returns for a task a signal stopped (exceptions with extra fields do not unpickle)."""

    signum: int


class RunsDied(TrainingError):
    """A run's worker process kept dying (a native crash, an OOM kill): the message names it, its signal and
    the last lines of its log. The other runs finished; the command resumes the dead ones."""


_stop_signal: int | None = None  # in a worker: the signal that asked it to stop


def _worker_start() -> None:
    """A pool worker: one torch thread; its own process group, so a Ctrl-C at the terminal reaches only the
    parent, which passes it on exactly once; a signal between runs means: start no more runs."""
    torch.set_num_threads(1)
    keep_freed_memory()  # a worker process of the `iat` command: as the command (iat.cpu_memory)
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


def _log_path(task: object) -> Path | None:
    return getattr(task, "log_path", None)


@contextlib.contextmanager
def _task_log(task: object) -> Iterator[None]:
    """The task's log file (if it names one): iat's log lines, and the Python stack of a native crash
    (faulthandler), so a worker that dies leaves its last words where the parent can read them."""
    path = _log_path(task)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as file:
        handler = logging.StreamHandler(file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logging.getLogger("iat").addHandler(handler)
        faulthandler.enable(file=file, all_threads=False)
        try:
            yield
        finally:
            faulthandler.disable()
            logging.getLogger("iat").removeHandler(handler)


def _watch_parent(parent: int) -> None:
    """In a worker: when the parent dies (kill -9), stop as a SIGTERM would (the run checkpoints), then exit."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(PARENT_GONE_GRACE_S)
    os._exit(128 + signal.SIGTERM)  # the run did not stop in time: its last checkpoint stays as it was


def _serve(conn: Connection, parent: int, gpu: int | None = None) -> None:
    """A worker's loop: (index, fn, task) in, (index, "ok" | "error", value) out, until None or the pipe closes.
    `gpu`: the one GPU this worker's runs see (set before CUDA starts in this process)."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    _worker_start()
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if job is None:
            return
        i, fn, task = job
        try:
            with _task_log(task):
                reply = (i, "ok", _guarded(fn, task))
        except Exception as e:  # the run's own error: the parent raises it, as in one process
            reply = (i, "error", e)
        try:
            conn.send(reply)
        except OSError:  # the parent is gone
            return
        except Exception:  # a value that does not pickle: its type and message still reach the parent
            conn.send((i, "error", RuntimeError(f"{type(reply[2]).__name__}: {reply[2]}")))


class _Worker:
    """One process of the pool and the pipe to it; `task` is the index it runs (None: idle)."""

    def __init__(self, context, gpu: int | None = None) -> None:
        self.conn, child = context.Pipe()
        self.gpu = gpu
        self.process = context.Process(target=_serve, args=(child, os.getpid(), gpu), daemon=True)
        self.process.start()
        child.close()
        self.task: int | None = None
        self.sent: float = 0.0

    def give(self, i: int, fn: Callable, task: object) -> None:
        self.task, self.sent = i, time.perf_counter()
        self.conn.send((i, fn, task))

    def end(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def _how_it_died(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-exitcode).name
    return f"exit code {exitcode}"


def _tail(path: Path | None, lines: int = 12) -> str:
    """The last lines of a task's log, without faulthandler's list of extension modules."""
    if path is None:
        return "(no log)"
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    text = [line for line in text if line.strip() and not line.startswith("Extension modules:")][-lines:]
    return "\n".join(f"    {line}" for line in text) or f"(empty: {path})"


@dataclass
class LocalLauncher:
    """Runs tasks here: in this process for one job, else in a pool of `jobs` processes.

    Ctrl-C or SIGTERM stops it cleanly: the signal is passed on to every worker (training finishes its
    step and writes a checkpoint), no task starts after it, every worker ends, then `Stopped` is raised.
    A worker that dies (a native crash, an OOM kill, SIGKILL) is replaced and its task run again, up to
    MAX_RETRIES times (the run resumes from its checkpoint); the other tasks go on. A task that keeps
    dying raises RunsDied after the rest have finished, naming it, its signal and its log's last lines.
    """

    jobs: int = 1
    gpus: int = 0  # GPUs to spread the workers over, worker k on GPU k mod gpus (0: leave CUDA's devices as they are)

    def _gpu_of(self, k: int) -> int | None:
        return k % self.gpus if self.gpus else None

    def map(self, fn: Callable[[T], R], tasks: Sequence[T]) -> list[R]:
        if self.jobs == 1 or len(tasks) <= 1:
            return self._map_here(fn, tasks)
        log.info("%d runs, %d at a time, one thread each", len(tasks), self.jobs)
        # spawn, not fork: a forked child would inherit torch's thread pools and locks mid-use
        context = multiprocessing.get_context("spawn")
        workers = [_Worker(context, self._gpu_of(k)) for k in range(min(self.jobs, len(tasks)))]
        stop: list[int] = []

        def on_signal(signum, frame) -> None:
            if not stop:
                log.info("%s: stopping every run after its current step", signal.Signals(signum).name)
            stop.append(signum)
            for w in workers:  # each worker's training writes its checkpoint
                with contextlib.suppress(ProcessLookupError, TypeError):
                    os.kill(w.process.pid, signum)

        previous = {}
        with contextlib.suppress(ValueError):  # not the main thread: signals stay the caller's business
            previous = {sig: signal.signal(sig, on_signal) for sig in SIGNALS}
        try:
            outcomes = self._drive(fn, tasks, workers, context, stop)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for w in workers:
                w.end()
        return self._results(tasks, outcomes, stop)

    def _drive(self, fn: Callable[[T], R], tasks: Sequence[T], workers: list[_Worker], context,
               stop: list[int]) -> dict[int, tuple[str, object]]:
        """Hand out the tasks until all are done, replacing dead workers; {index: (kind, value)} where kind
        is ok, error or died."""
        waiting, deaths, outcomes = list(range(len(tasks))), dict.fromkeys(range(len(tasks)), 0), {}
        while True:
            for w in workers:
                if w.task is None and waiting and not stop:
                    i = waiting.pop(0)
                    w.give(i, fn, tasks[i])
            busy = [w for w in workers if w.task is not None]
            if not busy:
                return outcomes
            multiprocessing.connection.wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for k, w in enumerate(workers):
                if w.task is None:
                    continue
                if w.conn.poll():
                    with contextlib.suppress(EOFError, OSError):
                        i, kind, value = w.conn.recv()
                        outcomes[i], w.task = (kind, value), None
                        continue
                if w.process.is_alive():
                    continue
                i, why = w.task, _how_it_died(w.process.exitcode)  # died with its task unfinished
                deaths[i] += 1
                label = getattr(tasks[i], "run_dir", f"task {i + 1}")
                if deaths[i] <= MAX_RETRIES and not stop:
                    log.warning("%s: its worker died (%s); running it again (%d of %d), from its checkpoint",
                                label, why, deaths[i], MAX_RETRIES)
                    waiting.insert(0, i)
                else:
                    outcomes[i] = ("died", f"{label} died {deaths[i]} time(s), last by {why}; the last lines of its "
                                           f"log ({_log_path(tasks[i])}):\n{_tail(_log_path(tasks[i]))}")
                w.conn.close()
                workers[k] = _Worker(context, w.gpu)

    def _results(self, tasks: Sequence[T], outcomes: dict[int, tuple[str, object]], stop: list[int]) -> list[R]:
        interrupted = [v.signum for kind, v in outcomes.values() if isinstance(v, _Interrupted)]
        if stop or interrupted:
            raise Stopped(stop[0] if stop else interrupted[0])
        died = [v for kind, v in outcomes.values() if kind == "died"]
        if died:
            raise RunsDied(f"{len(died)} run(s) kept dying; the others finished. " + "\n".join(died)
                           + "\nRun the same command again to resume them")
        for i in range(len(tasks)):  # the first error in task order, as one process would have raised it
            kind, value = outcomes[i]
            if kind == "error":
                raise value
        return [outcomes[i][1] for i in range(len(tasks))]

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
                  address: str | None = None, runs_per_gpu: int = 1) -> Launcher:
    """The launcher called `name` with `jobs` workers (None: one per CPU core, `runs_per_gpu` per GPU);
    `address`: the Ray cluster of `ray` (None: a local Ray it starts and stops). On GPUs, each local
    worker sees one GPU, and each Ray task asks for 1/runs_per_gpu of one."""
    if name not in LAUNCHERS:
        raise UsageError(f"--launcher {name!r}: choose one of {', '.join(LAUNCHERS)}")
    for option, value in (("--jobs", jobs), ("--runs-per-gpu", runs_per_gpu)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64):
            raise UsageError(f"{option} {value!r} must be a whole number in [1, 64]")
    if name == "ray":
        from iat.reproduce.ray_launcher import RayLauncher

        return RayLauncher(jobs, address, device, local_jobs=default_jobs(device, runs_per_gpu),
                           runs_per_gpu=runs_per_gpu)
    if address is not None:
        raise UsageError("--ray-address needs --launcher ray")
    return LocalLauncher(jobs or default_jobs(device, runs_per_gpu), gpus=on_gpus(device))
