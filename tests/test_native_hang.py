"""A run whose step hangs in native code still stops on SIGTERM/SIGINT: within the documented time, with
128 + signum, and its last checkpoint intact (iat.training.signals' watchdog); a second signal exits at once."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from iat.rundir import files

# Trains 3 epochs of 2 steps; the first step of epoch 2 (after epoch 1's checkpoint) hangs in a native call
# that ignores Python's signals: the main thread blocks SIGINT/SIGTERM and sleeps in libc with the GIL
# released, as a deadlocked kernel would. Python-level handlers can then never run in the main thread.
SCRIPT = """
import ctypes, signal, sys
from pathlib import Path
import iat.training.signals, iat.training.step
from iat.config import TrainConfig

iat.training.signals.HANG_LIMIT_S = float(sys.argv[2])
out = Path(sys.argv[1])
update = iat.training.step.Step.__call__
calls = []

def hanging_update(self, x, y, grad_weight=1.0):
    calls.append(1)
    if len(calls) == 3:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        (out.parent / "hanging").write_text("")
        ctypes.CDLL(None).sleep(600)
    return update(self, x, y, grad_weight)

iat.training.step.Step.__call__ = hanging_update
cfg = TrainConfig(method="erm", dataset="digits", arch="mlp6", width=8, epochs=3, batch_size=32, train_size=64,
                  seed=0, device="cpu")
from iat.training.loop import train
train(cfg, out, progress=False)
"""


def start_hanging_run(tmp_path: Path, hang_limit: float) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SCRIPT), str(out), str(hang_limit)],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "hanging").exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, "the planted hang was never reached"
        time.sleep(0.1)
    return proc, out


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_a_run_stuck_in_native_code_with_its_checkpoint_intact(tmp_path, signum):
    proc, out = start_hanging_run(tmp_path, hang_limit=2.0)
    checkpoint = (out / files.CHECKPOINT).read_bytes()
    sent = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert time.monotonic() - sent < 30
    assert "did not stop within" in err and "stuck in native code at epoch 2" in err and "intact" in err
    assert (out / files.CHECKPOINT).read_bytes() == checkpoint  # epoch 1's, untouched


def test_a_second_signal_exits_at_once_even_when_stuck(tmp_path):
    proc, out = start_hanging_run(tmp_path, hang_limit=600.0)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and time.monotonic() - sent < 20, err
