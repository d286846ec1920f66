"""What evaluation scores and keeps: eval.json merging and where it goes, read-only runs, and models whose
weights or outputs are not finite (refused by every command instead of scored)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from reliability_helpers import train_tiny_run

from iat.cli import main
from iat.rundir import files, tensors


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory)


def test_eval_keeps_earlier_results_a_new_call_does_not_redo(tmp_path, tiny_run, capsys):
    import json

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert main(["-q", "eval", str(run), "--attacks", "clean,fgsm", "--limit", "20"]) == 0
    assert main(["-q", "eval", str(run), "--attacks", "clean", "--limit", "10"]) == 0
    saved = json.loads((run / files.EVAL).read_text())
    assert saved["n_examples"] == 10 and list(saved["results"]) == ["clean"]  # the documented format: this call
    kept = {(e["attack"], e["n_examples"]) for e in saved["history"]}
    assert kept == {("clean", 20), ("fgsm", 20), ("clean", 10)}
    assert main(["-q", "eval", str(run), "--attacks", "clean", "--limit", "10"]) == 0  # a redo replaces its entry
    assert len(json.loads((run / files.EVAL).read_text())["history"]) == 3


def test_eval_prints_the_table_when_eval_json_cannot_be_written(tmp_path, tiny_run, capsys, monkeypatch):
    import errno

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "write_json", full)
    assert main(["-q", "eval", str(run), "--attacks", "clean", "--limit", "10"]) == 1
    out, err = capsys.readouterr()
    assert "clean" in out and err.count("\n") == 1 and "No space left" in err, (out, err)
    assert not (run / files.EVAL).exists()


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
    saved = json.loads((out / files.EVAL).read_text())
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
    saved = json.loads((evals / files.EVAL).read_text())
    assert saved["run"] == str(tmp_path / "a" / "r") and {e["attack"] for e in saved["history"]} == {"clean", "fgsm"}


def test_eval_out_refuses_a_directory_of_another_runs_results(tmp_path, tiny_run, capsys):
    other, mine, evals = tmp_path / "other", tmp_path / "mine", tmp_path / "evals"
    shutil.copytree(tiny_run, other)
    shutil.copytree(tiny_run, mine)
    assert main(["-q", "eval", str(other), "--attacks", "clean", "--limit", "10", "--out", str(evals)]) == 0
    capsys.readouterr()
    unnamed = tmp_path / "unnamed"  # an eval.json copied out of a run directory: whose is it?
    unnamed.mkdir()
    (unnamed / files.EVAL).write_text(json.dumps({"results": {"clean": {"error": 1.0}}}))
    for target in (other, evals, unnamed):  # another run's directory; another run's eval.json; no run named
        before = {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()}
        assert main(["-q", "eval", str(mine), "--attacks", "clean", "--limit", "10", "--out", str(target)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and "choose a directory of its own" in err, err
        assert {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()} == before
    (unnamed / files.EVAL).write_text("[]")  # damaged: replaced, as inside a run directory
    assert main(["-q", "eval", str(mine), "--attacks", "clean", "--limit", "10", "--out", str(unnamed)]) == 0


# -------------------------------------------------------------------- non-finite weights, every command


def nan_run(tiny_run, root: Path, name: str) -> Path:
    run = root / name
    shutil.copytree(tiny_run, run)
    state = tensors.load_weights(run / files.WEIGHTS)
    key = next(k for k in state if k.endswith("running_var"))
    state[key] = -torch.ones_like(state[key])  # a negative BatchNorm variance: NaN after the square root
    tensors.save_weights(run / files.WEIGHTS, state)
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
    (deep / files.CONFIG).write_text("[" * 100_000)
    with pytest.raises(UsageError, match="nested too deeply"):
        iat.load_model(deep)


# ------------------------------------------------------- finite weights, outputs that are not


def overflowing_run(tiny_run, root: Path) -> Path:
    """A copy whose last layer's weights are finite but so large (3e38) that its logits overflow to inf."""
    run = root / "overflow"
    shutil.copytree(tiny_run, run)
    state = tensors.load_weights(run / files.WEIGHTS)
    head = [k for k, v in state.items() if k.endswith("weight") and v.dim() == 2][-1]
    state[head] = torch.full_like(state[head], 3e38)
    tensors.save_weights(run / files.WEIGHTS, state)
    return run


def test_logits_that_overflow_are_refused_not_scored(tmp_path, tiny_run, capsys):
    run = overflowing_run(tiny_run, tmp_path)
    argv = ["sweep", "steps", str(run), "--steps", "1,2", "--limit", "20", "--out", str(tmp_path / "o")]
    assert main(["-q", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "NaN or infinite on" in err and "of 20 images" in err, err
    assert not (tmp_path / "o").exists()


def test_the_audits_logits_check_fails_on_nan_outputs():
    from iat.robustness.checks import check_logits

    class Broken(torch.nn.Module):
        def forward(self, x):
            return torch.full((len(x), 10), float("nan"))

    check = check_logits(Broken(), torch.rand(4, 1, 8, 8))
    assert check.status == "fail" and "NaN or infinite on 4 of 4" in check.detail


def test_eval_refuses_a_weights_tensor_of_another_dtype_instead_of_casting_it(tmp_path, tiny_run, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    state = tensors.load_weights(run / files.WEIGHTS)
    name = next(k for k in state if k.endswith("weight"))
    state[name] = state[name].half()
    tensors.save_weights(run / files.WEIGHTS, state)
    assert main(["-q", "eval", str(run), "--attacks", "clean", "--limit", "10"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and f"tensor {name} is float16" in err, err
    assert not (run / files.EVAL).exists()


# ------------------------------------------------------------------------------- bounded work


def test_restarts_are_bounded(tiny_run, capsys):
    from iat.attacks import AttackBudget
    from iat.attacks.budget import MAX_RESTARTS
    from iat.errors import UsageError

    with pytest.raises(SystemExit) as e:
        main(["-q", "eval", str(tiny_run), "--restarts", str(MAX_RESTARTS + 1)])
    assert e.value.code == 2 and "--restarts" in capsys.readouterr().err
    with pytest.raises(UsageError, match="restarts"):
        AttackBudget(0.1, 0.025, steps=1, restarts=10**6)  # the library's way in is bounded too
