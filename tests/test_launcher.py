"""The local launcher's pool survives its workers: a worker that dies (SIGKILL, a native crash) is replaced and
its task run again; a task that keeps dying is reported by name, signal and log; workers outlive no parent."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from iat.errors import UsageError
from iat.reproduce import launch
from iat.reproduce.launch import MAX_RETRIES, LocalLauncher, RunsDied


@dataclass
class Task:
    """What the launcher needs of a task: a name for messages and a log file."""

    run_dir: Path
    behaviour: str  # ok | die-once | segfault

    @property
    def log_path(self) -> Path:
        return self.run_dir.parent / "logs" / f"{self.run_dir.name}.log"


def work(task: Task) -> str:
    """Runs in a pool worker (spawned: module level, picklable)."""
    tries = task.run_dir.with_suffix(".tries")
    tries.write_text(tries.read_text() + "x" if tries.exists() else "x")
    if task.behaviour == "die-once" and tries.read_text() == "x":
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would, mid-task
    if task.behaviour == "segfault":
        ctypes.string_at(0)  # a native crash: faulthandler writes the Python stack into the task's log
    return f"{task.run_dir.name} done"


def test_a_worker_killed_mid_grid_is_replaced_and_its_task_run_again(tmp_path, caplog):
    tasks = [Task(tmp_path / name, b) for name, b in [("a", "ok"), ("b", "die-once"), ("c", "ok"), ("d", "ok")]]
    assert LocalLauncher(2).map(work, tasks) == ["a done", "b done", "c done", "d done"]
    assert (tmp_path / "b.tries").read_text() == "xx"  # died once, ran again
    assert "b: its worker died (SIGKILL); running it again (1 of 3)" in caplog.text


def test_a_task_that_keeps_crashing_is_named_with_its_signal_and_log_after_the_others_finish(tmp_path):
    tasks = [Task(tmp_path / "crashes", "segfault"), Task(tmp_path / "fine", "ok")]
    with pytest.raises(RunsDied) as caught:
        LocalLauncher(2).map(work, tasks)
    message = str(caught.value)
    assert f"crashes died {MAX_RETRIES + 1} time(s), last by SIGSEGV" in message
    assert "Segmentation fault" in message and "in work" in message  # the log's tail: faulthandler's stack
    assert (tmp_path / "crashes.tries").read_text() == "x" * (MAX_RETRIES + 1)
    assert (tmp_path / "fine.tries").read_text() == "x"  # the other run finished, once


def wait_for_stop(task: Task) -> str:
    """A 'run' that stops only when asked, as training's SignalGuard does."""
    task.run_dir.with_suffix(".pid").write_text(str(os.getpid()))
    while launch._stop_signal is None:
        time.sleep(0.05)
    return "stopped"


def test_workers_stop_when_their_parent_is_killed(tmp_path):
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from test_launcher import Task, wait_for_stop
        from iat.reproduce.launch import LocalLauncher
        if __name__ == "__main__":
            LocalLauncher(2).map(wait_for_stop, [Task(Path({str(tmp_path)!r}) / n, "ok") for n in "ab"])
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    pid_files = [tmp_path / "a.pid", tmp_path / "b.pid"]
    deadline = time.time() + 120
    while not all(p.exists() and p.read_text() for p in pid_files):
        assert time.time() < deadline and parent.poll() is None, "the workers never started"
        time.sleep(0.1)
    parent.kill()  # kill -9: no chance to pass anything on
    parent.wait()
    pids = [int(p.read_text()) for p in pid_files]
    deadline = time.time() + 20
    while any(alive(pid) for pid in pids):
        assert time.time() < deadline, "a worker outlived its parent"
        time.sleep(0.2)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def visible_gpu(task: Task) -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def test_runs_per_gpu_puts_that_many_workers_on_each_gpu(monkeypatch, tmp_path):
    from iat.reproduce.launch import make_launcher

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    launcher = make_launcher("local", None, "cuda", runs_per_gpu=2)
    assert (launcher.jobs, launcher.gpus) == (4, 2)
    assert make_launcher("local", None, "cuda").jobs == 2  # one per GPU by default
    assert make_launcher("local", None, "cpu", runs_per_gpu=3).gpus == 0  # the CPU: nothing to pin
    seen = LocalLauncher(4, gpus=2).map(visible_gpu, [Task(tmp_path / str(i), "ok") for i in range(4)])
    assert sorted(seen) == ["0", "0", "1", "1"]  # each worker sees one GPU, two workers per GPU
    with pytest.raises(UsageError, match="--runs-per-gpu 0"):
        make_launcher("local", None, "cuda", runs_per_gpu=0)


def test_ray_asks_for_a_share_of_a_gpu_per_run(monkeypatch):
    pytest.importorskip("ray")
    from iat.reproduce.ray_launcher import RayLauncher

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    launcher = RayLauncher(None, device="cuda", runs_per_gpu=4)
    assert launcher.gpu_share == 0.25 and launcher.jobs == 4  # a local Ray: 4 runs on the one GPU
