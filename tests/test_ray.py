"""`--launcher ray`: a local Ray gives the local launcher's numbers, a killed worker is retried and resumes,
an --out the nodes cannot see is refused, and without Ray the option is a one-line error."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from iat.cli import main
from iat.errors import UsageError
from iat.reproduce import reproduce
from iat.reproduce import runner as runner_module
from iat.reproduce.tasks import RunTask, run_task

try:
    import ray
except ImportError:
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="Ray is not installed (pip install 'iat[ray]')")

TINY = '''name = "tiny"
title = "tiny"
kind = "whitebox"
methods = ["erm", "pgd"]
[paper]
dataset = "digits"
arch = "cnn-small"
width = 8
epochs = 2
eps = 0.1
step_size = 0.025
attack_steps = 2
test_size = 100
attacks = ["clean", "pgd7"]
eval_eps = 0.1
eval_step_size = 0.025
'''


@pytest.fixture(scope="module")
def quiet_ray():
    """No usage reports from test clusters; Ray is down after the module, whatever happened."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        logging.getLogger("iat").setLevel(logging.WARNING)
        yield
        if ray.is_initialized():
            ray.shutdown()


@pytest.fixture
def own_ray(quiet_ray):
    """No Ray running: the launcher starts its own, and must stop it."""
    if ray.is_initialized():
        ray.shutdown()
    yield
    assert not ray.is_initialized()


@pytest.fixture
def shared_ray(quiet_ray):
    """One local Ray with 2 CPUs for the tests that use it (a start costs seconds): the launcher uses it
    and leaves it running."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this file


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    """The tiny experiment's file, and its numbers from the local launcher with two jobs."""
    root = tmp_path_factory.mktemp("ray")
    toml = root / "tiny.toml"
    toml.write_text(TINY)
    local = reproduce(str(toml), out=root / "local", device="cpu", progress=False, launcher="local", jobs=2)
    return toml, local


def tables(results: dict) -> dict:
    return results["ours"]["whitebox"]


def blind(path: str, token: str, cwd: str) -> tuple[str, bool]:
    return "node-without-the-share", False


@needs_ray
def test_an_out_the_nodes_cannot_see_is_refused(tiny, tmp_path, own_ray, monkeypatch, capsys):
    from iat.reproduce import ray_launcher

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this file
    monkeypatch.setattr(ray_launcher, "_sees", blind)
    toml, _ = tiny
    out = tmp_path / "out"
    assert main(["reproduce", str(toml), "--out", str(out), "--launcher", "ray", "--jobs", "1", "-q"]) == 2
    err = capsys.readouterr().err
    assert "not visible on Ray node(s) node-without-the-share" in err and "every node sees" in err
    assert len(err.strip().splitlines()) == 1 and not list(out.glob("*-seed*"))  # nothing trained


@needs_ray
def test_ray_gives_the_local_launchers_numbers_and_a_second_call_trains_nothing(tiny, tmp_path, shared_ray):
    toml, local = tiny
    out = tmp_path / "out"
    first = reproduce(str(toml), out=out, device="cpu", progress=False, launcher="ray", jobs=2)
    assert ray.is_initialized()  # the caller's Ray is left running
    assert tables(first) == tables(local)
    assert (first["jobs"], first["threads"]) == (2, 1) and len(first["trained"]) == 2
    assert not (out / ".iat-ray-check").exists()
    again = reproduce(str(toml), out=out, device="cpu", progress=False, launcher="ray", jobs=2)
    assert again["trained"] == [] and tables(again) == tables(local)


def dies_once_mid_run(task: RunTask) -> dict:
    """run_task, but pgd's first attempt kills its own process once its first checkpoint is written; the
    retry notes whether it found that checkpoint to resume from."""
    killed, resumed = task.out / "killed", task.out / "resumed"
    if task.cfg.method == "pgd":
        if killed.exists():
            resumed.write_text(str((task.run_dir / "checkpoint.pt").is_file()))
        else:
            def kill_after_first_checkpoint():
                while not (task.run_dir / "checkpoint.pt").is_file():
                    time.sleep(0.005)
                killed.write_text("")
                os.kill(os.getpid(), signal.SIGKILL)
            threading.Thread(target=kill_after_first_checkpoint, daemon=True).start()
    return run_task(task)


@needs_ray
def test_a_worker_killed_mid_run_is_retried_and_resumes_to_the_same_numbers(tiny, tmp_path, shared_ray,
                                                                             monkeypatch):
    monkeypatch.setattr(runner_module, "run_task", dies_once_mid_run)
    toml, local = tiny
    out = tmp_path / "out"
    results = reproduce(str(toml), out=out, device="cpu", progress=False, launcher="ray", jobs=2)
    assert (out / "killed").exists() and (out / "resumed").read_text() == "True"
    assert tables(results) == tables(local)


def refuses(x: int) -> int:
    raise UsageError(f"bad task {x}")


@needs_ray
def test_a_runs_own_error_reaches_the_caller_as_it_was_raised(shared_ray):
    from iat.reproduce.ray_launcher import RayLauncher

    assert RayLauncher(2).map(abs, [-1, 2, -3]) == [1, 2, 3]
    with pytest.raises(UsageError, match=r"^bad task 1$"):  # not Ray's wrapper with its traceback
        RayLauncher(1).map(refuses, [1])
    with pytest.raises(UsageError, match="no GPUs"):
        RayLauncher(None, device="cuda").map(abs, [1])


def test_without_ray_the_launcher_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    assert main(["demo", "--out", str(tmp_path / "d"), "--launcher", "ray", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'iat[ray]'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "d").exists()
    assert main(["demo", "--out", str(tmp_path / "d"), "--ray-address", "auto", "-q"]) == 2
    assert "--ray-address needs --launcher ray" in capsys.readouterr().err


def test_an_address_that_does_not_answer_is_found_in_seconds_not_after_rays_retries():
    import socket

    from iat.reproduce.ray_launcher import _unreachable

    with socket.socket() as free:  # a port nobody listens on: bind, read it, close
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    assert "does not answer" in _unreachable(f"127.0.0.1:{port}")
    assert "does not answer" in _unreachable(f"ray://127.0.0.1:{port}")
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert _unreachable(f"127.0.0.1:{listening.getsockname()[1]}") is None
    assert _unreachable("auto") is None  # no port: Ray finds the cluster itself


@needs_ray
@pytest.mark.slow
def test_sigterm_stops_a_ray_reproduce_with_143_and_one_line(tmp_path):
    """Ray's driver installs a C++ SIGTERM handler that dumps a stack and aborts (exit 134); the launcher takes the
    signal back: the runs in flight are cancelled (their checkpoints stay) and the command exits 143 in one line."""
    import subprocess

    toml = tmp_path / "tiny.toml"
    toml.write_text(TINY.replace("epochs = 2", "epochs = 200"))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "iat", "reproduce", str(toml), "--out", str(tmp_path / "out"),
                             "--launcher", "ray", "--device", "cpu"], env=env, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + 180
    while not any("runs on Ray" in line for line in lines):
        assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
        lines.append(proc.stderr.readline())
    time.sleep(3)  # the tasks are running
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "interrupted (SIGTERM)" in err and "logging.cc" not in err, err
