"""`iat sweep eps|steps` (Tables 6, 7): invariants, agreement with `iat eval`, files, command line."""

from __future__ import annotations

import json

import pytest
from conftest import DIGITS_EPS

from iat.attacks import AttackBudget
from iat.attacks.worstcase import error_pct, predict
from iat.cli import main
from iat.data import load_data
from iat.evaluate import evaluate
from iat.robustness import sweep_eps, sweep_steps, sweep_table
from iat.rundir.read import load_run_model

pytestmark = pytest.mark.usefixtures("one_thread")
LIMIT = 150


def iat(capsys, *args, check=True):
    """Run the command line in this process: (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    out, err = capsys.readouterr()
    if check:
        assert code == 0, err
    return code, out, err


def by_run(result, axis):
    out = {}
    for p in result["points"]:
        out.setdefault(p["run"], {})[p[axis]] = p["error"]
    return out


@pytest.fixture(scope="module")
def eps_result(trained_runs, one_thread):
    runs = [trained_runs["erm"], trained_runs["pgd"]]
    return sweep_eps(runs, [0.3, 0.0, DIGITS_EPS, 0.05], steps=10, limit=LIMIT, device="cpu")


def test_sweep_eps_invariants(trained_runs, eps_result):
    x, y = load_data("digits", "test", limit=LIMIT)
    curves = by_run(eps_result, "eps")
    assert eps_result["steps"] == 10 and eps_result["step_size_rule"] == "eps/4"
    assert list(curves) == [str(trained_runs["erm"]), str(trained_runs["pgd"])]
    for run, curve in curves.items():
        assert list(curve) == [0.0, 0.05, DIGITS_EPS, 0.3]  # sorted, one point per eps
        errors = list(curve.values())
        assert errors == sorted(errors), (run, curve)  # never falls as eps grows
        model = load_run_model(run)
        assert curve[0.0] == error_pct(predict(model, x) == y)  # eps 0 is the clean error
        # the smallest eps of the list is exactly `iat eval`'s PGD with the eps/4 step
        assert curve[0.05] == evaluate(model, x, y, ["pgd10"], budget=AttackBudget(0.05, 0.05 / 4))["pgd10"]["error"]
        assert curve[0.3] >= 99, f"{run}: PGD should fool nearly everything at eps 0.3 ({curve})"
    assert curves[str(trained_runs["pgd"])][DIGITS_EPS] < curves[str(trained_runs["erm"])][DIGITS_EPS] - 10


def test_sweep_steps_matches_separate_runs(trained_runs):
    run = trained_runs["pgd"]
    result = sweep_steps([run], [20, 1, 5], eps=None, limit=LIMIT, device="cpu")
    assert result["eps"] == DIGITS_EPS and result["step_size_used"] == DIGITS_EPS / 4
    curve = by_run(result, "steps")[str(run)]
    assert list(curve) == [1, 5, 20] and list(curve.values()) == sorted(curve.values())
    x, y = load_data("digits", "test", limit=LIMIT)
    ref = evaluate(load_run_model(run), x, y, ["pgd5", "pgd20"], budget=AttackBudget(DIGITS_EPS, DIGITS_EPS / 4))
    assert curve[5] == ref["pgd5"]["error"] and curve[20] == ref["pgd20"]["error"]


def test_sweep_table_layout(eps_result):
    lines = sweep_table(eps_result).splitlines()
    assert "PGD-10" in lines[0] and all(c in lines[0] for c in ("| 0 ", "0.05", "0.1", "0.3"))
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["erm", "pgd"]
    assert len(lines) == 4 and lines[2].count("|") == 6


def test_sweep_commands_write_json_and_png(trained_runs, tmp_path, capsys):
    erm, pgd = trained_runs["erm"], trained_runs["pgd"]
    out = tmp_path / "out"
    _, stdout, _ = iat(capsys, "sweep", "eps", erm, pgd, "--eps", "0,2/255,0.1", "--steps", "3", "--limit", 40,
                       "--out", out, "-q")
    assert "2/255" in stdout and "erm" in stdout and "pgd" in stdout
    data = json.loads((out / "sweep-eps.json").read_text())
    assert data["steps"] == 3 and len(data["points"]) == 6
    assert all(set(p) == {"run", "eps", "error"} for p in data["points"])
    assert {p["run"] for p in data["points"]} == {str(erm), str(pgd)}
    assert (out / "sweep-eps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    iat(capsys, "-q", "sweep", "steps", pgd, "--steps", "1,4", "--eps", "0.1", "--limit", 40, "--out", out)
    data = json.loads((out / "sweep-steps.json").read_text())
    assert data["eps"] == 0.1 and [p["steps"] for p in data["points"]] == [1, 4]
    assert all(set(p) == {"run", "steps", "error"} for p in data["points"])
    assert (out / "sweep-steps.png").stat().st_size > 1000
    assert not (pgd / "sweep-steps.json").exists()  # --out honoured; runs untouched


@pytest.mark.parametrize("args,needle", [
    (["sweep", "eps", "RUN", "--eps", "8"], "write 8/255"),
    (["sweep", "eps", "RUN"], "--eps"),
    (["sweep", "steps", "RUN", "--steps", "0"], "steps list"),
    (["sweep", "steps", "RUN", "--steps", "5", "--eps", "0"], "(0, 1]"),
    (["sweep", "eps", "NOPE", "--eps", "0.1"], "does not exist"),
    (["sweep", "eps", "RUN", "RUN", "--eps", "0.1"], "twice"),
    (["sweep", "fast", "RUN"], "invalid choice"),
])
def test_sweep_bad_input_is_one_line_and_writes_nothing(trained_runs, tmp_path, capsys, args, needle):
    args = [str(trained_runs["erm"]) if a == "RUN" else str(tmp_path / "nope") if a == "NOPE" else a for a in args]
    code, _, err = iat(capsys, *args, "--out", tmp_path / "out", check=False)
    assert code == 2, err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
