"""One writer per directory: `outdir.lock_dir` is an OS file lock, contended here by real processes.

The lock is released by the kernel when its holder ends, however it ends (kill -9 included), so a
crash never leaves a directory locked; a second writer is refused with one line naming the holder.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from iat.errors import UsageError
from iat.rundir import files, outdir

SRC = str(Path(outdir.__file__).parents[2])

HOLDER = textwrap.dedent("""
    import sys, time
    from iat.rundir import outdir
    with outdir.lock_dir(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def start_holder(path: Path, seconds: float = 60) -> subprocess.Popen:
    """A separate Python process holding the lock on `path` until it ends; returns once it holds it."""
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(seconds)], env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def try_lock(path: Path) -> str:
    try:
        with outdir.lock_dir(path):
            return "locked"
    except UsageError as e:
        return str(e)


def test_second_writer_is_refused_and_the_holder_named(tmp_path):
    run = tmp_path / "new" / "run"  # does not exist yet: the holder creates it
    proc = start_holder(run)
    try:
        msg = try_lock(run)
        assert msg.startswith(f"run directory {run} is in use by process {proc.pid} (")
        assert msg.endswith("; wait for it to finish or stop it") and "\n" not in msg
        assert run.is_dir()
    finally:
        proc.kill()
        proc.wait()


def test_released_on_kill_9(tmp_path):
    proc = start_holder(tmp_path)
    assert "in use" in try_lock(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (tmp_path / files.LOCK).exists()  # the killed holder's file stays, but locks nothing
    assert files.is_bookkeeping(tmp_path / files.LOCK)
    assert try_lock(tmp_path) == "locked"


def test_released_on_normal_exit(tmp_path):
    proc = start_holder(tmp_path, seconds=0)
    assert proc.wait(timeout=60) == 0
    assert try_lock(tmp_path) == "locked"
    assert list(tmp_path.iterdir()) == []  # a clean release removes the lock file


def _contend(path: str, barrier, results) -> None:
    barrier.wait()
    try:
        with outdir.lock_dir(path):
            results.put("locked")
            barrier.wait()  # hold it until every process has tried
    except UsageError as e:
        results.put(str(e))
        barrier.wait()


def test_processes_racing_into_one_new_directory_get_one_lock(tmp_path):
    """Like several `iat train --out NEW` started at once: exactly one proceeds."""
    ctx = multiprocessing.get_context("fork")
    n = 4
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(str(tmp_path / "run"), barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    outcomes = sorted(results.get(timeout=60) for _ in range(n))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert outcomes.count("locked") == 1
    # "by process N (...)" once the holder has written its name into the lock file; a loser that reads it a
    # moment before that is told "by another process"
    assert all(" is in use by " in m for m in outcomes if m != "locked")
    assert not (tmp_path / "run").exists()  # the winner created it, wrote nothing, and removed it


def test_nested_in_one_process_but_not_in_a_forked_child(tmp_path):
    with outdir.lock_dir(tmp_path):
        with outdir.lock_dir(tmp_path / "."):
            pass
        assert (tmp_path / files.LOCK).exists()  # the inner block did not release the outer lock
        pid = os.fork()
        if pid == 0:  # the child shares the parent's table of held locks, not its lock
            os._exit(0 if f"process {os.getppid()}" in try_lock(tmp_path) else 1)
        assert os.waitpid(pid, 0)[1] == 0
    assert try_lock(tmp_path) == "locked"


def test_created_directories_are_removed_unless_written(tmp_path):
    target = tmp_path / "a" / "b"
    with pytest.raises(UsageError, match="bad option"), outdir.lock_dir(target):
        raise UsageError("bad option")  # a command refused inside the lock leaves nothing behind
    assert list(tmp_path.iterdir()) == []
    with outdir.lock_dir(target):
        files.write_json(target / "config.json", {})
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]


def test_lock_file_counts_as_bookkeeping(tmp_path):
    assert files.is_bookkeeping(tmp_path / ".iat.lock")
    assert files.is_bookkeeping(tmp_path / ".model.safetensors.abc123.tmp")
    assert not files.is_bookkeeping(tmp_path / "config.json")
    with outdir.lock_dir(tmp_path):
        assert [p.name for p in tmp_path.iterdir()] == [".iat.lock"] and files.is_empty(tmp_path)
        (tmp_path / ".config.json.x1y2.tmp").write_text("{")
        assert files.is_empty(tmp_path)
        (tmp_path / "config.json").write_text("{}")
        assert not files.is_empty(tmp_path)


def test_a_file_or_an_unwritable_place_is_one_line(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="is not a directory"):
        with outdir.lock_dir(tmp_path / "f", what="--out"):
            pass
    (tmp_path / "ro").mkdir()

    def read_only(*args, **kw):
        raise OSError(30, "Read-only file system")

    with pytest.MonkeyPatch.context() as mp:  # (a real read-only directory: root writes there anyway)
        mp.setattr(outdir.os, "open", read_only)
        with pytest.raises(UsageError, match=r"ro cannot be locked for writing \(Read-only file system\)"):
            with outdir.lock_dir(tmp_path / "ro"):
                pass
