"""Faults during training: a NaN loss, Ctrl-C (SIGINT), SIGTERM, a full disk. Each is injected.

A diverged run stops with one line (exit 1) and keeps its last good checkpoint; a signal writes a
checkpoint and exits 128 + signal (130 for Ctrl-C), and the resumed run ends bit-identical to an
uninterrupted one; a full disk while writing a checkpoint leaves the previous checkpoint intact.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import iat.training.step
from iat.cli import main
from iat.rundir import files, tensors

ARGS = ["--method", "mixup", "--dataset", "digits", "--arch", "cnn-small", "--width", "8", "--epochs", "2",
        "--train-size", "300", "--batch-size", "50", "--seed", "1", "--device", "cpu", "--checkpoint-every", "2"]
STEPS = 12  # 2 epochs of 6 steps


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def iat_train(capsys, out: Path, *more: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["train", *ARGS, "--out", str(out), "-q", *more])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "reference"
    assert main(["train", *ARGS, "--out", str(out), "-q"]) == 0
    return out


def at_step(monkeypatch, k: int, action) -> None:
    """Run `action(model, x, y)` inside the k-th training step (1-based, counted over the whole run)."""
    real = iat.training.step.make_loss_fn
    calls = []

    def make_loss_fn(*args, **kwargs):
        loss_fn = real(*args, **kwargs)

        def wrapped(model, x, y):
            calls.append(1)
            loss, metrics = loss_fn(model, x, y)
            if len(calls) == k:
                loss = action(model, loss)
            return loss, metrics
        return wrapped

    monkeypatch.setattr(iat.training.step, "make_loss_fn", make_loss_fn)


# ------------------------------------------------------------------------------------------ NaN


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    at_step(monkeypatch, 5, lambda model, loss: loss * float("nan"))
    rc, _, err = iat_train(capsys, out)
    assert rc == 1
    line = one_line(err)
    assert "loss became nan at epoch 1, step 5" in line and "last good checkpoint" in line and "--lr" in line
    ckpt = tensors.load_checkpoint(out / files.CHECKPOINT)
    assert (ckpt["epoch"], ckpt["step"]) == (0, 4)  # the checkpoint of step 4 survives
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert not (out / files.WEIGHTS).exists() and files.temp_files(out) == []


def test_infinite_weights_are_never_checkpointed(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"

    def poison(model, loss):  # the loss stays finite; the gradient, then the weights, do not
        next(model.parameters()).register_hook(lambda g: torch.full_like(g, float("inf")))
        return loss

    at_step(monkeypatch, 4, poison)  # step 4 is followed by a checkpoint
    rc, _, err = iat_train(capsys, out)
    assert rc == 1 and "weights became NaN or infinite" in one_line(err)
    ckpt = tensors.load_checkpoint(out / files.CHECKPOINT)
    assert (ckpt["epoch"], ckpt["step"]) == (0, 2)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


# -------------------------------------------------------------------------------------- signals


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_exits_and_resumes_bit_exact(reference, tmp_path, monkeypatch, capsys, sig, code):
    out = tmp_path / "run"

    def send(model, loss):
        os.kill(os.getpid(), sig)  # handled after this step: checkpoint, then stop
        return loss

    at_step(monkeypatch, 9, send)  # mid-epoch 2, between two checkpoints
    rc, _, err = iat_train(capsys, out)
    assert rc == code
    line = one_line(err)
    assert f"{sig.name} at epoch 2, step 3" in line and "checkpoint written" in line and "--resume" in line
    ckpt = tensors.load_checkpoint(out / files.CHECKPOINT)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 3)
    assert not (out / files.WEIGHTS).exists()
    monkeypatch.undo()
    rc, _, err = iat_train(capsys, out, "--resume")
    assert rc == 0, err
    assert sha(out / files.WEIGHTS) == sha(reference / files.WEIGHTS)


def test_second_ctrl_c_stops_at_once_keeping_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    saved = {}

    def twice(model, loss):
        saved["bytes"] = (out / files.CHECKPOINT).read_bytes()
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # the impatient user
        return loss

    at_step(monkeypatch, 7, twice)
    handler = signal.getsignal(signal.SIGINT)
    rc, _, err = iat_train(capsys, out)
    assert rc == 130 and "the last checkpoint is kept" in one_line(err)
    assert (out / files.CHECKPOINT).read_bytes() == saved["bytes"]
    assert files.temp_files(out) == []
    assert signal.getsignal(signal.SIGINT) is handler  # train() gives the handler back


@pytest.mark.slow
def test_ctrl_c_on_a_real_process(tmp_path):
    """A real `iat train` process, a real SIGINT: exit 130, one line, and --resume finishes it."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "iat", "train", *ARGS, "--epochs", "10", "--checkpoint-every", "0", "--out", str(out),
           "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / files.CHECKPOINT).exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "SIGINT" in one_line(err) and "--resume" in err
    ckpt = tensors.load_checkpoint(out / files.CHECKPOINT)
    assert ckpt["epoch"] < 10
    done = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (out / files.WEIGHTS).exists()


# ------------------------------------------------------------------------------------ full disk


def enospc_on(monkeypatch, name: str, nth: int) -> None:
    """The nth fsync of a temporary file for `name` fails as if the disk were full."""
    real_fsync = os.fsync
    count = []

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if Path(target).name.startswith(f".{name}."):
            count.append(1)
            if len(count) == nth:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(reference, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    history = []
    real_save = tensors.save_checkpoint

    def save_and_remember(path, state):
        real_save(path, state)
        history.append(Path(path).read_bytes())

    monkeypatch.setattr(tensors, "save_checkpoint", save_and_remember)
    enospc_on(monkeypatch, files.CHECKPOINT, 3)
    rc, _, err = iat_train(capsys, out)
    assert rc == 1
    line = one_line(err)
    assert "No space left on device" in line and "previous checkpoint is intact" in line and "--resume" in line
    assert len(history) == 2 and (out / files.CHECKPOINT).read_bytes() == history[-1]
    assert files.temp_files(out) == [] and not (out / files.WEIGHTS).exists()
    monkeypatch.undo()
    rc, _, err = iat_train(capsys, out, "--resume")  # space freed: the run finishes as if nothing happened
    assert rc == 0, err
    assert sha(out / files.WEIGHTS) == sha(reference / files.WEIGHTS)


@pytest.mark.parametrize("fail_in", ["write", "fsync", "replace"])
def test_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, fail_in):
    target = tmp_path / "file.json"
    files.write_json(target, {"old": True})
    before = target.read_bytes()
    error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fail(*args, **kwargs):
        raise error

    if fail_in == "write":
        real_fdopen = os.fdopen

        class Full:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, data):
                self.f.write(data[:1])
                raise error

        monkeypatch.setattr(files.os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    else:
        monkeypatch.setattr(files.os, fail_in, fail)
    with pytest.raises(OSError):
        files.write_json(target, {"new": True})
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert files.temp_files(tmp_path) == []
