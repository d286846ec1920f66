"""One writer per directory: locks on every directory a command writes (nested run directories too), and
paths no file system takes, refused in one line before anything is created."""

from __future__ import annotations

import shutil

import pytest
from conftest import tiny_config
from reliability_helpers import TINY_TRAIN, iat_process, lock_held_elsewhere, train_tiny_run, wait_for

from iat.cli import main
from iat.rundir import files


def test_two_trains_into_one_out_the_second_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "run"
    first = iat_process("train", *TINY_TRAIN, "--out", str(out), env={"IAT_TEST_WRITE_DELAY": "2"})
    try:
        wait_for(lambda: (out / files.LOCK).is_file() and (out / files.LOCK).read_text().count("\n") >= 2)
        second = iat_process("train", *TINY_TRAIN, "--out", str(out))
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        assert err.count("\n") == 1 and f"in use by process {first.pid}" in err and "iat train" in err
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert (out / files.WEIGHTS).is_file() and not (out / files.LOCK).exists()


def test_eval_on_a_run_being_written_is_refused(tmp_path, trained_runs):
    run = tmp_path / "run"
    shutil.copytree(trained_runs["erm"], run)
    with lock_held_elsewhere(run) as proc:
        before = sorted(p.name for p in run.iterdir())
        second = iat_process("eval", str(run), "--attacks", "clean", "--limit", "10")
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2 and err.count("\n") == 1 and f"process {proc.pid}" in err, err
        assert sorted(p.name for p in run.iterdir()) == before


def test_train_into_an_empty_dir_holding_only_a_stale_lock_file(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / files.LOCK).write_text("999999\niat train\n")  # a killed holder's: the kernel released its lock
    assert main(["-q", "train", *TINY_TRAIN, "--out", str(out)]) == 0
    assert (out / files.WEIGHTS).is_file()


# ------------------------------------------------------------------------- nested run directories


def test_an_experiments_worker_locks_the_run_directory_it_trains(tmp_path):
    """OUT is locked by `iat reproduce`, OUT/RUN by the worker that trains it: a plain `iat train --out OUT/RUN`
    already running there makes the worker refuse, instead of both writing the run's files."""
    from iat.errors import UsageError
    from iat.reproduce.tasks import RunTask, run_task

    run = tmp_path / "erm-seed0"
    cfg = tiny_config("erm", epochs=1, train_size=32, batch_size=16)
    with lock_held_elsewhere(run) as holder:
        with pytest.raises(UsageError, match=f"run directory {run} is in use by process {holder.pid}"):
            run_task(RunTask(cfg, run, tmp_path, done=False, progress=False))
        assert [p.name for p in run.iterdir()] == [files.LOCK]  # nothing trained beside the holder


# ---------------------------------------------------------------- paths no file system takes


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory)


@pytest.mark.parametrize("out, fragment", [
    ("", "is empty"),  # Path('') is the current directory: it would write there
    ("n" * 300, "more than the 255 a file name may have"),
    ("d/" * 2100, "longer than the 4096 bytes"),
    ("a\0b", "NUL byte"),
])
def test_an_out_no_file_system_takes_is_one_line_and_creates_nothing(tmp_path, tiny_run, capsys, monkeypatch, out,
                                                                     fragment):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["-q", "analyze", "norms", str(tiny_run), "--out", out]) == 2
    stdout, err = capsys.readouterr()
    assert stdout == "" and err.count("\n") == 1 and fragment in err and "Traceback" not in err, err
    assert list(work.iterdir()) == []
