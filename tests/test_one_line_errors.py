"""Failures that are no bad input still end in one line: a full disk (exit 1), a run path that is not UTF-8 in a
plot, and refusals under torchrun (exit 2 through `python -m iat.torchrun`, without torchrun's traceback)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reliability_helpers import SRC, TINY_TRAIN, train_tiny_run

from iat.cli import main
from iat.rundir import files


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory)


def test_a_full_disk_is_one_line_and_exit_1(tmp_path, tiny_run, capsys, monkeypatch):
    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "atomic_write_bytes", full)
    argv = ["analyze", "probe", str(tiny_run), "--n", "20", "--epochs", "1", "--out", str(tmp_path / "o")]
    assert main(["-q", *argv]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device; free space" in err and "Traceback" not in err, err


def test_a_run_path_that_is_not_utf8_is_plotted(tmp_path, tiny_run, capsys):
    weird = Path(os.fsdecode(bytes(tmp_path) + b"/run-\xe9"))  # a Latin-1 name
    shutil.copytree(tiny_run, weird)
    out = tmp_path / "o"
    assert main(["-q", "sweep", "steps", str(weird), "--steps", "1,2", "--limit", "10", "--out", str(out)]) == 0
    assert (out / "sweep-steps.png").stat().st_size > 0
    capsys.readouterr()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="torchrun starts worker processes")
def test_a_refusal_under_torchrun_exits_2_in_one_line(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("a file, not a directory")
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "iat.torchrun", "--standalone", "--nproc_per_node", "2", "-m", "iat",
                           "-q", "train", *TINY_TRAIN, "--out", str(taken)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "iat train: error: --out" in lines[0] and "Traceback" not in done.stderr, done.stderr
    # rank 1, waiting to join the group, ends on torchrun's SIGTERM, not after its 30 s shutdown timeout
    assert time.monotonic() - started < 25
