"""`--launcher ray`: each run of an experiment, trained and measured, is one Ray task on a cluster.

The runner hands over the same tasks as to the local launcher (reproduce/launch.py). Each goes to Ray with
one GPU when the cluster has GPUs and the run may use one, else one CPU; at most `jobs` are in flight.
Every node writes into the same --out, so the run directories must be on a file system every node sees:
that is checked first, with a marker file the driver writes and a task on every node reads.

Numbers do not depend on the launcher: each task pins torch's thread count exactly as the local launcher
does (one thread when several runs share the machine), and config.json records it. A task whose worker or
node dies is retried (Ray's max_retries); the retry calls the same function, which resumes the run from its
checkpoint (`train(..., resume=True)`) and skips what is finished.

Without --ray-address the launcher starts a local Ray for the experiment and stops it afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import torch

from iat.cpu_memory import keep_freed_memory
from iat.errors import UsageError
from iat.reproduce.stopping import SIGNALS, Stopped

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

INSTALL = "pip install 'iat[ray]'"
MAX_RETRIES = 3  # a dead worker or node; an exception raised by the run itself is not retried
MARKER = ".iat-ray-check"


def import_ray():
    """Ray, or a one-line UsageError saying how to get it."""
    try:
        import ray
    except ImportError:
        raise UsageError(f"--launcher ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


# ------------------------------------------------------------------------ what runs on the workers


def _enter(cwd: str) -> None:
    """Work in the driver's directory where this node has it, so relative paths (--out, --data-dir) mean
    what they mean to the driver; elsewhere only absolute ones work, and check_shared says so."""
    try:
        os.chdir(cwd)
    except OSError:
        pass


def _pinned(fn: Callable[[T], R], task: T, threads: int, cwd: str) -> R:
    """fn(task) with torch's thread count pinned as the local launcher pins it (Ray reuses workers)."""
    _enter(cwd)
    torch.set_num_threads(threads)
    keep_freed_memory()  # a worker of the `iat` command: as the command (iat.cpu_memory)
    return fn(task)


def _sees(path: str, token: str, cwd: str) -> tuple[str, bool]:
    """(this node's host name, whether it reads the driver's marker file at `path`)."""
    _enter(cwd)
    try:
        seen = Path(path).read_text() == token
    except OSError:
        seen = False
    return socket.gethostname(), seen


# ----------------------------------------------------------------------------------- the launcher


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def _unreachable(address: str, timeout_s: float = 5.0) -> str | None:
    """Why HOST:PORT (or ray://HOST:PORT) takes no TCP connection within `timeout_s`; None if it does, or if
    `address` names no port (`auto`: Ray finds the cluster itself)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        return f"{host}:{port} does not answer: {e.strerror or type(e).__name__}"
    return None


class RayLauncher:
    """Runs `fn` over the tasks as Ray tasks on the cluster at `address` (None: a local Ray started here)."""

    def __init__(self, jobs: int | None = None, address: str | None = None, device: str = "auto",
                 local_jobs: int = 1, runs_per_gpu: int = 1):
        self.ray = import_ray()
        self.address, self.device = address, device
        self._jobs = jobs
        self.local_jobs = local_jobs  # runs at once on a local Ray without GPUs (the local launcher's default)
        self.gpu_share = 1 / runs_per_gpu  # of one GPU per run: Ray packs runs_per_gpu runs onto each GPU
        self._started = False  # whether this launcher connected (and so disconnects, or stops its local Ray)
        if address is not None:  # a cluster that is not there fails now, before anything is written
            self.connect()

    # -- connecting

    def connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():  # a caller's Ray (a notebook, a test): use it, leave it running
            return
        quiet = logging.WARNING
        if self.address is None:
            ray.init(num_cpus=self.jobs, include_dashboard=False, logging_level=quiet)
            log.info("started a local Ray with %d slot(s)", self.jobs)
        else:
            unreachable = _unreachable(self.address)
            if unreachable:  # ray.init would retry for minutes
                raise UsageError(f"--ray-address {self.address}: cannot connect to a Ray cluster ({unreachable}); "
                                 "check the address, or start one with `ray start --head`")
            try:
                ray.init(address=self.address, logging_level=quiet)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise UsageError(f"--ray-address {self.address}: cannot connect to a Ray cluster "
                                 f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); start one with "
                                 "`ray start --head`") from None
        self._started = True

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False

    def gpus(self) -> bool:
        """Whether each run asks Ray for a GPU: the cluster has some and the run's --device allows one."""
        has = self.ray.cluster_resources().get("GPU", 0) > 0
        if self.device == "cuda" and not has:
            raise UsageError("--device cuda, but the Ray cluster has no GPUs; use --device cpu or auto")
        return has and self.device in ("cuda", "auto")

    @property
    def jobs(self) -> int:
        """Runs at once: --jobs; else, for a local Ray, one per GPU (a run may use one) or as the local
        launcher; else the cluster's GPUs or CPUs."""
        if self._jobs is None:
            if self.address is None and not self.ray.is_initialized():
                gpus = torch.cuda.device_count() if self.device in ("cuda", "auto") else 0
                self._jobs = round(gpus / self.gpu_share) or self.local_jobs
            else:
                self.connect()
                resources = self.ray.cluster_resources()
                gpus = resources.get("GPU", 0) / self.gpu_share if self.gpus() else 0
                self._jobs = max(1, int(gpus or resources.get("CPU", 1)))
        return self._jobs

    # -- checks

    def check_shared(self, out: Path) -> None:
        """Refuse a cluster whose nodes cannot read `out`: a task on every node that runs tasks reads a
        marker file written here."""
        ray = self.ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        token = f"{socket.gethostname()} {os.getpid()} {uuid.uuid4()}"
        marker = Path(out) / MARKER
        marker.write_text(token)
        try:
            nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
            check = ray.remote(_sees)
            refs = [check.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
                n["NodeID"], soft=False)).remote(str(marker), token, os.getcwd()) for n in nodes]
            try:
                seen = ray.get(refs)
            except ray.exceptions.RayError as e:
                raise UsageError(f"a Ray node could not run iat ({str(e).splitlines()[0]}); install the same iat "
                                 "and torch on every node") from None
        finally:
            marker.unlink(missing_ok=True)
        blind = [host for host, ok in seen if not ok]
        if blind:
            raise UsageError(f"--out {out} is not visible on Ray node(s) {', '.join(sorted(set(blind)))}: on a "
                             "cluster --out must be on a file system every node sees (NFS, a shared volume), "
                             "at the same path (give it as an absolute path if this directory is not shared)")

    # -- running

    def map(self, fn: Callable[[T], R], tasks: Sequence[T]) -> list[R]:
        """fn(task) for every task as a Ray task; results in the tasks' order. One log line per finished run."""
        if not tasks:
            return []
        self.connect()
        stop: list[int] = []
        previous = {}
        # Ray's driver installs a C++ handler that dumps a stack and aborts (exit 134) on SIGTERM: take the
        # signals back for the run, so they stop it as the local launcher's do (exit 143/130, one line).
        with contextlib.suppress(ValueError):  # not the main thread: signals stay the caller's business
            previous = {sig: signal.signal(sig, lambda signum, frame: stop.append(signum)) for sig in SIGNALS}
        try:
            return self._run(fn, tasks, stop)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            self.close()

    def _run(self, fn: Callable[[T], R], tasks: Sequence[T], stop: list[int]) -> list[R]:
        ray = self.ray
        for out in dict.fromkeys(t.out for t in tasks if hasattr(t, "out")):
            self.check_shared(out)
        jobs, gpu = self.jobs, self.gpus()
        threads = 1 if jobs > 1 else torch.get_num_threads()  # as the local launcher (and results.json) say
        remote = ray.remote(_pinned).options(num_cpus=1, num_gpus=self.gpu_share if gpu else 0,
                                                       max_retries=MAX_RETRIES)
        log.info("%d runs on Ray, %d at a time, %s each, %d torch thread(s)", len(tasks), jobs,
                 "one GPU" if gpu else "one CPU", threads)
        cwd = os.getcwd()
        results: dict[int, R] = {}
        running: dict[object, tuple[int, float]] = {}  # ref -> (task index, when submitted)
        waiting = list(range(len(tasks)))
        started = time.perf_counter()
        try:
            while waiting or running:
                while waiting and len(running) < jobs:
                    i = waiting.pop(0)
                    running[remote.remote(fn, tasks[i], threads, cwd)] = (i, time.perf_counter())
                ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
                if stop:  # the runs in flight are cancelled below; each resumes from its checkpoint next time
                    raise Stopped(stop[0])
                if not ready:
                    continue
                [ref] = ready
                i, submitted = running.pop(ref)
                results[i] = self._get(ref)
                label = getattr(tasks[i], "run_dir", f"task {i + 1}")
                log.info("[%d/%d done] %s in %s; %d left, %s so far", len(results), len(tasks), label,
                         _duration(time.perf_counter() - submitted), len(tasks) - len(results),
                         _duration(time.perf_counter() - started))
        finally:
            for ref in running:  # an error or Ctrl-C: stop the rest; their checkpoints stay for the next call
                ray.cancel(ref, force=True)
        return [results[i] for i in range(len(tasks))]

    def _get(self, ref):
        """The task's value; the run's own exception (a UsageError stays one line), not Ray's wrapper."""
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            if isinstance(getattr(e, "cause", None), Exception):
                raise e.cause from None
            raise
        except ray.exceptions.RayError as e:  # retries used up: a worker or node kept dying
            raise RuntimeError(f"a run failed on Ray after {MAX_RETRIES} retries ({str(e).splitlines()[0]}); "
                               "run the same command again: it resumes from the checkpoints") from None
