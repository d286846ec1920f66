"""Signals: SIGTERM and SIGINT stop a command with its checkpoints written, exit 130/143, and leave no worker
or temporary directory behind."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from reliability_helpers import alive, children_of, iat_process, wait_for

from iat.cli import main


@pytest.mark.slow
def test_sigterm_stops_a_parallel_demo_and_every_worker(tmp_path):
    out = tmp_path / "demo"
    demo = iat_process("demo", "--methods", "erm,mixup", "--seeds", "2", "--arch", "cnn-small", "--epochs", "3",
                       "--train-size", "64", "--test-size", "20", "--device", "cpu", "--jobs", "2", "--out", str(out),
                       env={"IAT_TEST_WRITE_DELAY": "0.5"})  # slow checkpoint writes: runs take seconds
    try:
        wait_for(lambda: len([p for p in out.glob("*-seed*") if (p / "config.json").is_file()]) >= 2, 120)
        workers = children_of(demo.pid)
        started = {p.name for p in out.glob("*-seed*")}
        demo.send_signal(signal.SIGTERM)
        _, err = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 143, err
    assert "SIGTERM" in err.splitlines()[-1]
    assert {p.name for p in out.glob("*-seed*")} == started  # nothing started after the signal
    assert any((out / name / "checkpoint.pt").is_file() for name in started)
    time.sleep(0.5)
    assert not [pid for pid in workers if alive(pid)]


def test_sigterm_in_reproduce_exits_143(monkeypatch, capsys):
    from iat.training import TrainingInterrupted

    def interrupted(*a, **k):
        raise TrainingInterrupted(signal.SIGTERM, Path("x"), 0, 3)

    monkeypatch.setattr("iat.reproduce.reproduce", interrupted)
    monkeypatch.setattr("iat.cli.locking.output_dir", lambda args: None)
    assert main(["-q", "reproduce", "table2", "--scale", "smoke", "--out", "nowhere"]) == 143
    assert "SIGTERM" in capsys.readouterr().err


def test_a_signal_between_runs_starts_no_more(monkeypatch):
    from iat.reproduce.launch import LocalLauncher, Stopped

    done = []

    def task(i):
        done.append(i)
        if i == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return i

    with pytest.raises(Stopped) as stopped:
        LocalLauncher(1).map(task, [0, 1, 2, 3])
    assert done == [0, 1] and stopped.value.signum == signal.SIGTERM


def test_surrogate_temporary_directory_is_removed_on_sigterm(monkeypatch, tmp_path):
    import tempfile

    from iat.robustness import surrogate

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def killed(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)  # outside training's own guard: e.g. while loading the data
        time.sleep(5)

    monkeypatch.setattr(surrogate, "train", killed)
    with pytest.raises(KeyboardInterrupt) as stopped:
        surrogate.train_surrogate("digits", device="cpu")
    assert stopped.value.signum == signal.SIGTERM and list(tmp_path.iterdir()) == []
