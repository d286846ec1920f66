"""Crash-safe, bit-exact resume: kill a real `iat train` process at many moments, resume, compare bytes.

Every run here is a cnn-small of width 8 on 300 digits images, 3 epochs of 6 steps, with
iat-manifold-mixup so that every source of randomness (data order, Beta draws, the mixing layer,
partner permutations, PGD's random start) has to survive the resume. All processes run with one
thread: on the CPU the bits of a result depend on the thread count, so a resumed run is compared
with a reference run of the same thread count.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iat.rundir import files, tensors

ARGS = ["--method", "iat-manifold-mixup", "--dataset", "digits", "--arch", "cnn-small", "--width", "8",
        "--epochs", "3", "--train-size", "300", "--batch-size", "50", "--attack-steps", "1",
        "--eps", "0.1", "--step-size", "0.05", "--seed", "3", "--device", "cpu", "--checkpoint-every", "4"]


def env(**extra) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith("IAT_TEST_")}
    e.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return e


def iat_train(out: Path, *more: str, **extra_env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iat", "train", *ARGS, "--out", str(out), "-q", *more],
                          env=env(**extra_env), capture_output=True, text=True, timeout=120)


def spawn(out: Path, *more: str, **extra_env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "iat", "train", *ARGS, "--out", str(out), "-q", *more],
                            env=env(**extra_env), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def kill_when(proc: subprocess.Popen, ready, timeout: float = 60.0, extra_delay: float = 0.0) -> bool:
    """SIGKILL `proc` as soon as `ready()` is true; False if it had already exited."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "the training process never reached the moment to kill it"
        time.sleep(0.002)
    time.sleep(extra_delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.returncode == -signal.SIGKILL


def checkpoint_versions(out: Path):
    """A function that is true once checkpoint.pt has been (re)written `n` times since now."""
    def changed(n: int):
        seen = []

        def ready() -> bool:
            try:
                st = (out / files.CHECKPOINT).stat()
            except FileNotFoundError:
                return False
            if not seen or seen[-1] != st.st_ino:
                seen.append(st.st_ino)  # each atomic write is a new inode
            return len(seen) >= n
        return ready
    return changed


def metrics_rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / files.METRICS).read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # wall time differs


def assert_finished_like(run: Path, reference: Path) -> None:
    assert sha(run / files.WEIGHTS) == sha(reference / files.WEIGHTS)
    assert metrics_rows(run) == metrics_rows(reference) and len(metrics_rows(run)) == 3
    assert files.temp_files(run) == []


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume") / "reference"
    done = iat_train(out)
    assert done.returncode == 0, done.stderr
    return out


def assert_whole(out: Path) -> None:
    """The real files of a run directory are whole (readable), whatever was killed half-way."""
    if (out / files.CONFIG).exists():
        files.read_json(out / files.CONFIG)
    if (out / files.CHECKPOINT).exists():
        tensors.load_checkpoint(out / files.CHECKPOINT)
    if (out / files.METRICS).exists():
        metrics_rows(out)


# Moments where the process kills itself (SIGKILL) half-way through writing a file: `NAME:N` is the
# N-th write of NAME by that process. Each process resumes what the previous one left.
SELF_KILLS = [
    "config.json:1",  # before anything else: the directory holds only a temporary file
    "checkpoint.pt:1",  # the run's first checkpoint (the process before wrote none)
    "checkpoint.pt:3",  # a mid-epoch checkpoint
    "metrics.jsonl:1",  # between an epoch's checkpoint and its metrics.jsonl
    "model.safetensors:1",  # after the last checkpoint, while writing the final weights
]


@pytest.mark.slow
def test_sigkill_during_writes_then_resume_is_bit_exact(reference, tmp_path):
    out = tmp_path / "run"
    for i, moment in enumerate(SELF_KILLS):
        killed = iat_train(out, *(["--resume"] if i else []), IAT_TEST_KILL_IN_WRITE=moment)
        assert killed.returncode == -signal.SIGKILL, f"{moment}: {killed.stderr}"
        assert not (out / files.WEIGHTS).exists()
        assert [p.name.split(".")[1] for p in files.temp_files(out)] == [moment.split(".")[0]], moment
        assert_whole(out)
    finished = iat_train(out, "--resume")
    assert finished.returncode == 0, finished.stderr
    assert_finished_like(out, reference)


@pytest.mark.slow
def test_outside_kill_at_three_moments_then_resume_is_bit_exact(reference, tmp_path):
    """`kill -9` from outside: before the first checkpoint, mid-epoch, during a (slowed) checkpoint write."""
    out = tmp_path / "run"
    proc = spawn(out)
    assert kill_when(proc, lambda: (out / files.CONFIG).exists())  # before the first checkpoint (usually)
    assert_whole(out)

    versions = checkpoint_versions(out)
    proc = spawn(out, "--resume")
    assert kill_when(proc, versions(2), extra_delay=0.02)  # a few steps after the second checkpoint
    assert_whole(out)

    proc = spawn(out, "--resume", IAT_TEST_WRITE_DELAY="0.3")  # each write pauses half-way: a wide window
    assert kill_when(proc, lambda: any(p.name.startswith(".checkpoint.pt.") for p in files.temp_files(out)))
    assert files.temp_files(out)
    assert_whole(out)

    finished = iat_train(out, "--resume")
    assert finished.returncode == 0, finished.stderr
    assert_finished_like(out, reference)


def test_resuming_a_finished_run_does_nothing_and_says_so(reference, tmp_path, capsys):
    from iat.cli import main

    out = tmp_path / "done"
    shutil.copytree(reference, out)
    before = {p.name: (p.stat().st_mtime_ns, sha(p)) for p in out.iterdir()}
    assert main(["train", *ARGS, "--out", str(out), "-q", "--resume"]) == 0
    assert "already complete (3 epochs); nothing to do" in capsys.readouterr().out
    assert {p.name: (p.stat().st_mtime_ns, sha(p)) for p in out.iterdir()} == before


def test_every_checkpoint_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    """In-process: keep every checkpoint a run writes (one per step); resume from each of them."""
    import torch


    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _resume_from_every_checkpoint(tmp_path, monkeypatch)
    finally:
        torch.set_num_threads(threads)


def _resume_from_every_checkpoint(tmp_path, monkeypatch):
    from iat.config import TrainConfig
    from iat.training import train

    cfg = TrainConfig(method="iat-mixup", dataset="digits", arch="cnn-small", width=8, epochs=2, train_size=150,
                      batch_size=50, attack_steps=1, eps=0.1, step_size=0.05, seed=5, device="cpu",
                      checkpoint_every=1)
    saved = []
    real_save = tensors.save_checkpoint

    def keep(path, state):
        real_save(path, state)
        saved.append(Path(path).read_bytes())

    monkeypatch.setattr(tensors, "save_checkpoint", keep)
    full = train(cfg, tmp_path / "full", progress=False)
    monkeypatch.setattr(tensors, "save_checkpoint", real_save)
    assert len(saved) == 6  # 3 steps per epoch, 2 epochs: one checkpoint per step
    for i, blob in enumerate(saved):
        out = tmp_path / f"from-{i}"
        out.mkdir()
        shutil.copy(full / files.CONFIG, out / files.CONFIG)
        (out / files.CHECKPOINT).write_bytes(blob)
        train(cfg, out, resume=True, progress=False)
        assert sha(out / files.WEIGHTS) == sha(full / files.WEIGHTS), f"resume from checkpoint {i + 1}"
        assert metrics_rows(out) == metrics_rows(full)
