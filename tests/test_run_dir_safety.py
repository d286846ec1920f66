"""One writer per directory: locks on every directory a command writes (nested run directories too), and
paths no file system takes, refused in one line before anything is created."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from reliability_helpers import SRC, TINY_TRAIN, iat_process, wait_for

from iat import runio
from iat.cli import main


def test_two_trains_into_one_out_the_second_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "run"
    first = iat_process("train", *TINY_TRAIN, "--out", str(out), env={"IAT_TEST_WRITE_DELAY": "2"})
    try:
        wait_for(lambda: (out / runio.LOCK).is_file() and (out / runio.LOCK).read_text().count("\n") >= 2)
        second = iat_process("train", *TINY_TRAIN, "--out", str(out))
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        assert err.count("\n") == 1 and f"in use by process {first.pid}" in err and "iat train" in err
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert (out / runio.WEIGHTS).is_file() and not (out / runio.LOCK).exists()


def test_eval_on_a_run_being_written_is_refused(tmp_path, trained_runs):
    run = tmp_path / "run"
    shutil.copytree(trained_runs["erm"], run)
    code = "import sys, time\nfrom iat import runio\nwith runio.lock_dir(sys.argv[1]):\n" \
           "    print('locked', flush=True); time.sleep(60)\n"
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, "-c", code, str(run)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        before = sorted(p.name for p in run.iterdir())
        second = iat_process("eval", str(run), "--attacks", "clean", "--limit", "10")
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2 and err.count("\n") == 1 and f"process {proc.pid}" in err, err
        assert sorted(p.name for p in run.iterdir()) == before
    finally:
        proc.kill()
        proc.wait()


def test_train_into_an_empty_dir_holding_only_a_stale_lock_file(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / runio.LOCK).write_text("999999\niat train\n")  # a killed holder's: the kernel released its lock
    assert main(["-q", "train", *TINY_TRAIN, "--out", str(out)]) == 0
    assert (out / runio.WEIGHTS).is_file()
