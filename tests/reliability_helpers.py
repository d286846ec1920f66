"""Helpers of the reliability tests (test_run_dir_safety, test_checkpoint_integrity, test_eval_integrity,
test_signals, ...): an `iat` subprocess, waiting, /proc walks, the flags of a TrainConfig, a tiny run."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from conftest import tiny_config

from iat.rundir import outdir
from iat.training import train

SRC = str(Path(outdir.__file__).parents[2])
TINY_TRAIN = ["--method", "erm", "--dataset", "digits", "--arch", "cnn-small", "--width", "4", "--epochs", "1",
              "--train-size", "64", "--batch-size", "32", "--device", "cpu"]


def iat_process(*argv: str, env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC, **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "iat", "-q", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(predicate, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def children_of(pid: int) -> set[int]:
    """Every live descendant of `pid` (from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cli_args(cfg) -> list[str]:
    """`iat train` flags for a TrainConfig (the fields tiny_config sets)."""
    args = []
    for key in ("method", "dataset", "arch", "width", "epochs", "batch_size", "lr", "eps", "step_size",
                "attack_steps", "seed", "device", "train_size", "checkpoint_every", "attack_bn"):
        args += ["--" + key.replace("_", "-"), str(getattr(cfg, key))]
    return args


def train_tiny_run(tmp_path_factory) -> Path:
    """A finished erm run of one epoch on 32 digits (a module fixture's body: tests copy it, never write it)."""
    return train(tiny_config("erm", epochs=1, train_size=32, batch_size=16), tmp_path_factory.mktemp("e") / "run",
                 progress=False)


@contextlib.contextmanager
def lock_held_elsewhere(path: Path) -> Iterator[subprocess.Popen]:
    """Another process holding `outdir.lock_dir(path)` (as a running `iat train --out PATH` does) for the block."""
    code = "import sys, time\nfrom iat.rundir import outdir\nwith outdir.lock_dir(sys.argv[1]):\n" \
           "    print('locked', flush=True); time.sleep(60)\n"
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait()
