"""Reliability, round 2 (issue 11): BatchNorm-mode attacks, locks, damaged weights and checkpoints,
eval.json merging, signals. Each test is tiny (digits, a few steps)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from iat import runio
from iat.attacks import PGD
from iat.cli import main
from iat.methods import method_names
from iat.train import train


@pytest.mark.parametrize("attack_bn", ["eval", "train"])
@pytest.mark.parametrize("method", method_names())
def test_every_method_trains_in_both_attack_bn_modes(tmp_path, method, attack_bn):
    cfg = tiny_config(method, epochs=1, train_size=32, batch_size=16, attack_steps=1, attack_bn=attack_bn)
    out = train(cfg, tmp_path / "run", progress=False)
    assert (out / "model.safetensors").is_file()


def test_train_mode_attack_leaves_buffers_untouched_and_unversioned():
    cfg = tiny_config("pgd")
    from iat.models import build_model

    model = build_model(cfg).train()
    before = {k: (v.clone(), v._version) for k, v in model.named_buffers()}
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    PGD(model, 0.1, 0.025, 2, bn_mode="train")(x, y)
    for k, v in model.named_buffers():
        assert torch.equal(v, before[k][0]) and v._version == before[k][1], k


# ------------------------------------------------------------------------ one writer per directory

SRC = str(Path(runio.__file__).parents[1])
TINY_TRAIN = ["--method", "erm", "--dataset", "digits", "--arch", "cnn-small", "--width", "4", "--epochs", "1",
              "--train-size", "64", "--batch-size", "32", "--device", "cpu"]


def iat_process(*argv: str, env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC, **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "iat", "-q", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(predicate, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


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


# ------------------------------------------------------------------ checkpoints, field by field


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run stopped mid-epoch 2 by a checkpoint every 3 steps: (config, run dir) to copy from."""
    cfg = tiny_config("pgd", epochs=2, train_size=96, batch_size=16, attack_steps=1, checkpoint_every=3)
    out = tmp_path_factory.mktemp("ckpt") / "run"
    train(cfg, out, progress=False)
    (out / runio.WEIGHTS).unlink()  # the last checkpoint is at the end of epoch 2: make it resumable again
    ckpt = runio.load_checkpoint(out / runio.CHECKPOINT)
    return cfg, out, ckpt


def damage(ckpt: dict, field: str, value) -> dict:
    import copy

    ckpt = copy.deepcopy(ckpt)
    *parents, last = field.split(".", 1) if field.startswith("model.") else field.split(".")
    target = ckpt
    for p in parents:
        target = target[int(p) if isinstance(target, dict) and p.isdigit() and int(p) in target else p]
    target[last] = value
    return ckpt


@pytest.mark.parametrize("field, value, named", [
    ("step", 6, "step"),  # == steps per epoch: would resume into the next epoch with a 0.0 loss row
    ("running.loss_sum", "x", "running.loss_sum"),
    ("running.count", float("nan"), "running.count"),
    ("rng.torch", torch.zeros(3, dtype=torch.uint8), "rng.torch"),
    ("rng.python", torch.zeros(10, dtype=torch.int64), "rng.python"),
    ("rng.numpy_pos", 10**6, "rng.numpy_pos"),
    ("model.head.weight", torch.zeros(3), "model.head.weight"),
    ("metrics", [{}, {}, {}], "metrics"),
])
def test_a_checkpoint_field_that_does_not_fit_is_one_line_naming_it(tmp_path, interrupted, capsys, field,
                                                                      value, named):
    cfg, src, ckpt = interrupted
    out = tmp_path / "run"
    shutil.copytree(src, out)
    if field == "step":
        ckpt = damage(ckpt, "epoch", 1)
    if field == "model.head.weight":
        field = "model." + next(k for k in ckpt["model"] if k.endswith("weight"))
        named = field
    runio.save_checkpoint(out / runio.CHECKPOINT, damage(ckpt, field, value))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code = main(["-q", "train", *cli_args(cfg), "--out", str(out), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and named in err and str(out / runio.CHECKPOINT) in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_momentum_buffer_of_the_wrong_shape_is_one_line(tmp_path, interrupted, capsys):
    cfg, src, ckpt = interrupted
    out = tmp_path / "run"
    shutil.copytree(src, out)
    ckpt = damage(ckpt, "optimizer.state.0.momentum_buffer", torch.zeros(2, 2))
    runio.save_checkpoint(out / runio.CHECKPOINT, ckpt)
    assert main(["-q", "train", *cli_args(cfg), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "optimizer.state.0.momentum_buffer" in err, err


def test_nan_in_a_checkpoints_weights_is_refused(tmp_path, interrupted, capsys):
    cfg, src, ckpt = interrupted
    out = tmp_path / "run"
    shutil.copytree(src, out)
    name = next(k for k in ckpt["model"] if k.endswith("weight"))
    ckpt = damage(ckpt, f"model.{name}", torch.full_like(ckpt["model"][name], float("nan")))
    runio.save_checkpoint(out / runio.CHECKPOINT, ckpt)
    assert main(["-q", "train", *cli_args(cfg), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NaN" in err, err


def cli_args(cfg) -> list[str]:
    """`iat train` flags for a TrainConfig (the fields tiny_config sets)."""
    args = []
    for key in ("method", "dataset", "arch", "width", "epochs", "batch_size", "lr", "eps", "step_size",
                "attack_steps", "seed", "device", "train_size", "checkpoint_every", "attack_bn"):
        args += ["--" + key.replace("_", "-"), str(getattr(cfg, key))]
    return args


# ------------------------------------------------------------- a finished run with damaged weights


@pytest.mark.parametrize("damage", ["garbage", "nan"])
def test_resume_rebuilds_damaged_final_weights_from_the_final_checkpoint(tmp_path, damage, capsys):
    cfg = tiny_config("erm", epochs=1, train_size=32, batch_size=16)
    out = train(cfg, tmp_path / "run", progress=False)
    good = (out / runio.WEIGHTS).read_bytes()
    if damage == "garbage":
        (out / runio.WEIGHTS).write_bytes(b"\x00" * 40)
    else:
        state = runio.load_weights(out / runio.WEIGHTS)
        name = next(k for k in state if k.endswith("weight"))
        state[name] = torch.full_like(state[name], float("nan"))
        runio.save_weights(out / runio.WEIGHTS, state)
    assert main(["-q", "train", *cli_args(cfg), "--out", str(out), "--resume"]) == 0
    assert (out / runio.WEIGHTS).read_bytes() == good


def test_resume_with_damaged_weights_and_no_final_checkpoint_says_how_to_recover(tmp_path, capsys):
    cfg = tiny_config("erm", epochs=1, train_size=32, batch_size=16)
    out = train(cfg, tmp_path / "run", progress=False)
    (out / runio.WEIGHTS).write_bytes(b"\x00" * 40)
    (out / runio.CHECKPOINT).unlink()
    assert main(["-q", "train", *cli_args(cfg), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no checkpoint.pt" in err and "restore" in err, err


# ------------------------------------------------------------------------------------- reproduce


def test_reproduce_check_out_ignores_a_killed_first_writes_temporary(tmp_path):
    from iat.reproduce.experiment import load_experiment
    from iat.reproduce.runner import check_out

    exp = load_experiment("table2", "smoke")
    (tmp_path / ".experiment.json.ab12cd.tmp").write_text("{")
    (tmp_path / runio.LOCK).write_text("")
    check_out(tmp_path, exp)  # no UsageError: nothing but bookkeeping


@pytest.mark.parametrize("content", [b"[" * 100000, b"\xff\xfe", b"[1, 2]", b'{"settings": 3}'])
def test_reproduce_damaged_manifest_is_one_line(tmp_path, content):
    from iat.errors import UsageError
    from iat.reproduce.experiment import load_experiment
    from iat.reproduce.runner import check_out

    (tmp_path / "experiment.json").write_bytes(content)
    with pytest.raises(UsageError, match="experiment.json"):
        check_out(tmp_path, load_experiment("table2", "smoke"))


def test_reproduce_damaged_metrics_is_not_a_traceback(tmp_path):
    from iat.reproduce.runner import train_seconds

    run = tmp_path / "run"
    run.mkdir()
    (run / runio.METRICS).write_text('{"seconds": 2}\n[[[\n')
    assert train_seconds([run]) == 0.0


# ------------------------------------------------------------------------------------------- eval


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train(tiny_config("erm", epochs=1, train_size=32, batch_size=16), tmp_path_factory.mktemp("e") / "run",
                 progress=False)


def test_eval_keeps_earlier_results_a_new_call_does_not_redo(tmp_path, tiny_run, capsys):
    import json

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert main(["-q", "eval", str(run), "--attacks", "clean,fgsm", "--limit", "20"]) == 0
    assert main(["-q", "eval", str(run), "--attacks", "clean", "--limit", "10"]) == 0
    saved = json.loads((run / runio.EVAL).read_text())
    assert saved["n_examples"] == 10 and list(saved["results"]) == ["clean"]  # the documented format: this call
    kept = {(e["attack"], e["n_examples"]) for e in saved["history"]}
    assert kept == {("clean", 20), ("fgsm", 20), ("clean", 10)}
    assert main(["-q", "eval", str(run), "--attacks", "clean", "--limit", "10"]) == 0  # a redo replaces its entry
    assert len(json.loads((run / runio.EVAL).read_text())["history"]) == 3


def test_eval_prints_the_table_when_eval_json_cannot_be_written(tmp_path, tiny_run, capsys, monkeypatch):
    import errno

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runio, "write_json", full)
    assert main(["-q", "eval", str(run), "--attacks", "clean", "--limit", "10"]) == 1
    out, err = capsys.readouterr()
    assert "clean" in out and err.count("\n") == 1 and "No space left" in err, (out, err)
    assert not (run / runio.EVAL).exists()


@contextlib.contextmanager
def read_only_copy(tiny_run: Path, run: Path, monkeypatch) -> Iterator[Path]:
    """A copy of `tiny_run` at `run` that this process may not write to, made writable again after."""
    shutil.copytree(tiny_run, run)
    run.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: let the permission check see what a user would
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == run and mode & os.W_OK
                            else real_access(p, mode, **kw))
    try:
        yield run
    finally:
        run.chmod(0o755)


def test_eval_on_a_read_only_run_is_refused_before_attacking(tmp_path, tiny_run, capsys, monkeypatch):
    with read_only_copy(tiny_run, tmp_path / "run", monkeypatch) as run:
        assert main(["-q", "eval", str(run), "--attacks", "clean"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "not writable" in err


def test_eval_of_a_read_only_run_writes_elsewhere_with_out(tmp_path, tiny_run, capsys, monkeypatch):
    out = tmp_path / "evals" / "run"
    before = sorted(p.name for p in tiny_run.iterdir())
    with read_only_copy(tiny_run, tmp_path / "run", monkeypatch) as run:
        assert main(["-q", "eval", str(run), "--attacks", "clean", "--limit", "20", "--out", str(out)]) == 0
        assert main(["-q", "eval", str(run), "--attacks", "fgsm", "--limit", "20", "--out", str(out)]) == 0
    assert sorted(p.name for p in run.iterdir()) == before  # the run directory is as it was
    saved = json.loads((out / runio.EVAL).read_text())
    assert saved["run"] == str(run.resolve()) and set(saved["results"]) == {"fgsm"}
    assert {e["attack"] for e in saved["history"]} == {"clean", "fgsm"}  # the first call's result kept
    capsys.readouterr()


def test_eval_out_names_the_run_by_its_absolute_path(tmp_path, tiny_run, capsys, monkeypatch):
    """Relative paths typed from different directories: the same run is accepted, another one refused."""
    for d in ("a/r", "b/a/r"):
        shutil.copytree(tiny_run, tmp_path / d)
    evals = tmp_path / "evals"
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "eval", "a/r", "--attacks", "clean", "--limit", "10", "--out", str(evals)]) == 0
    monkeypatch.chdir(tmp_path / "a")
    assert main(["-q", "eval", "r", "--attacks", "fgsm", "--limit", "10", "--out", str(evals)]) == 0  # the same run
    capsys.readouterr()
    monkeypatch.chdir(tmp_path / "b")
    assert main(["-q", "eval", "a/r", "--attacks", "fgsm", "--limit", "10", "--out", str(evals)]) == 2  # another one
    assert "not of" in capsys.readouterr().err
    saved = json.loads((evals / runio.EVAL).read_text())
    assert saved["run"] == str(tmp_path / "a" / "r") and {e["attack"] for e in saved["history"]} == {"clean", "fgsm"}


def test_eval_out_refuses_a_directory_of_another_runs_results(tmp_path, tiny_run, capsys):
    other, mine, evals = tmp_path / "other", tmp_path / "mine", tmp_path / "evals"
    shutil.copytree(tiny_run, other)
    shutil.copytree(tiny_run, mine)
    assert main(["-q", "eval", str(other), "--attacks", "clean", "--limit", "10", "--out", str(evals)]) == 0
    capsys.readouterr()
    unnamed = tmp_path / "unnamed"  # an eval.json copied out of a run directory: whose is it?
    unnamed.mkdir()
    (unnamed / runio.EVAL).write_text(json.dumps({"results": {"clean": {"error": 1.0}}}))
    for target in (other, evals, unnamed):  # another run's directory; another run's eval.json; no run named
        before = {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()}
        assert main(["-q", "eval", str(mine), "--attacks", "clean", "--limit", "10", "--out", str(target)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and "choose a directory of its own" in err, err
        assert {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()} == before
    (unnamed / runio.EVAL).write_text("[]")  # damaged: replaced, as inside a run directory
    assert main(["-q", "eval", str(mine), "--attacks", "clean", "--limit", "10", "--out", str(unnamed)]) == 0


# ------------------------------------------------------------------------------------------ signals


def children_of(pid: int) -> set[int]:
    """Every live descendant of `pid` (from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
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


# -------------------------------------------------------------------- non-finite weights, every command


def nan_run(tiny_run, root: Path, name: str) -> Path:
    run = root / name
    shutil.copytree(tiny_run, run)
    state = runio.load_weights(run / runio.WEIGHTS)
    key = next(k for k in state if k.endswith("running_var"))
    state[key] = -torch.ones_like(state[key])  # a negative BatchNorm variance: NaN after the square root
    runio.save_weights(run / runio.WEIGHTS, state)
    return run


@pytest.mark.parametrize("command", ["eval", "transfer", "audit", "analyze-norms", "sweep"])
def test_non_finite_weights_are_refused_by_every_command(tmp_path, tiny_run, capsys, command):
    bad = nan_run(tiny_run, tmp_path, "bad")
    good = tmp_path / "good"
    shutil.copytree(tiny_run, good)
    argv = {"eval": ["eval", str(bad)],
            "transfer": ["transfer", str(good), str(bad), "--eps", "0.1", "--out", str(tmp_path / "o")],
            "audit": ["audit", str(bad), "--surrogate", str(good), "--out", str(tmp_path / "o")],
            "analyze-norms": ["analyze", "norms", str(good), str(bad), "--out", str(tmp_path / "o")],
            "sweep": ["sweep", "eps", str(bad), "--eps", "0.1", "--out", str(tmp_path / "o")]}[command]
    assert main(["-q", *argv]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "BatchNorm variance" in err and out == "", err
    assert not (tmp_path / "o").exists()


def test_load_model_raises_the_projects_error_for_non_finite_weights(tmp_path, tiny_run):
    import iat
    from iat.errors import UsageError

    with pytest.raises(UsageError, match="BatchNorm variance"):
        iat.load_model(nan_run(tiny_run, tmp_path, "bad"))
    deep = tmp_path / "deep"
    shutil.copytree(tiny_run, deep)
    (deep / runio.CONFIG).write_text("[" * 100_000)
    with pytest.raises(UsageError, match="nested too deeply"):
        iat.load_model(deep)


def test_a_non_utf8_checkpoint_path_is_read(tmp_path, tiny_run):
    weird = Path(os.fsdecode(bytes(tmp_path) + b"/r\xff"))
    shutil.copytree(tiny_run, weird)
    assert runio.load_checkpoint(weird / runio.CHECKPOINT)["epoch"] == 1


def test_sigterm_in_reproduce_exits_143(monkeypatch, capsys):
    from iat.train import TrainingInterrupted

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


def test_a_last_batch_of_one_joins_the_one_before(tmp_path):
    cfg = tiny_config("erm", arch="preactresnet18", width=2, epochs=1, train_size=33, batch_size=16)
    out = train(cfg, tmp_path / "run", progress=False)
    assert (out / runio.WEIGHTS).is_file()


@pytest.mark.parametrize("argv, fragment", [
    (["--seed", "184461906879890"], "--seed"),
    (["--width", "100000"], "choose a smaller width"),
    (["--mixup-alpha", "1e-300"], "--mixup-alpha"),
])
def test_values_that_passed_validation_then_crashed_are_refused(tmp_path, capsys, argv, fragment):
    out = tmp_path / "run"
    assert main(["-q", "train", *TINY_TRAIN[:-2], "--method", "mixup", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err and not out.exists(), err


@pytest.mark.parametrize("argv", [["--seed", str(2**70)], ["--hidden", str(10**9)]])
def test_probe_bounds(tiny_run, capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(["-q", "analyze", "probe", str(tiny_run), *argv])
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_seed_max_fits_every_epoch():
    from iat.config import SEED_MAX
    from iat.train.state import epoch_order

    epoch_order(SEED_MAX, 100_000, 3)  # no overflow
