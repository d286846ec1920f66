"""AutoAttack through its authors' package (the optional extra), and a clear error without it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import DIGITS_EPS, DIGITS_STEP
from test_sweep import iat

import iat.attacks.autoattack as aa_module
from iat.attacks import AttackBudget, AutoAttack, autoattack_available, parse_attack_name
from iat.data import load_data
from iat.evaluate import evaluate
from iat.rundir.read import load_run_model

pytestmark = pytest.mark.usefixtures("one_thread")
needs_extra = pytest.mark.skipif(not autoattack_available(),
                                 reason="the optional extra is not installed: pip install 'iat[autoattack]'")


def test_autoattack_is_an_attack_name():
    assert parse_attack_name("AutoAttack") == ("autoattack", 0)


def test_missing_extra_is_a_one_line_error(trained_runs, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(trained_runs["pgd"], run)
    for name in ("eval.json", "audit.json"):
        (run / name).unlink(missing_ok=True)
    monkeypatch.setattr(aa_module, "autoattack_available", lambda: False)
    code, _, err = iat(capsys, "eval", run, "--attacks", "clean,autoattack", "--limit", 5, check=False)
    assert code == 2 and "pip install 'iat[autoattack]'" in err and len(err.strip().splitlines()) == 1, err
    assert not (run / "eval.json").exists()
    code, _, err = iat(capsys, "audit", run, "--autoattack", "--surrogate", trained_runs["erm"], check=False)
    assert code == 2 and "iat[autoattack]" in err and not (run / "audit.json").exists()


@needs_extra
@pytest.mark.slow
def test_autoattack_at_least_as_strong_as_pgd20(trained_runs):
    """Worst case over APGD-CE, APGD-T, FAB-T and Square: PGD-20's error or more, up to noise."""
    x, y = load_data("digits", "test", limit=40)
    model = load_run_model(trained_runs["pgd"])
    r = {k: v["error"] for k, v in evaluate(model, x, y, ["clean", "pgd20", "autoattack"],
                                            budget=AttackBudget(DIGITS_EPS, DIGITS_STEP)).items()}
    noise = 2 * 100 / len(x)  # two examples
    assert r["autoattack"] >= r["pgd20"] - noise, r
    assert r["autoattack"] > r["clean"] + 5, f"AutoAttack barely beats clean: is it attacking at all? {r}"
    assert all(p.grad is None for p in model.parameters())


def test_self_check_refuses_examples_outside_the_ball():
    x = torch.rand(4, 1, 8, 8) * 0.5
    aa_module.self_check(x, x + 0.05, 0.05)
    for bad in (x + 0.2, x - 1, x * float("nan")):
        with pytest.raises(RuntimeError, match="invalid examples"):
            aa_module.self_check(x, bad, 0.05)


@needs_extra
def test_eval_reports_autoattack_like_any_attack(trained_runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_runs["erm"], run)  # falls to APGD-CE at once, so this takes seconds
    _, out, _ = iat(capsys, "eval", run, "--attacks", "clean,autoattack", "--limit", 8, "--eps", "0.3", "-q")
    report = json.loads((run / "eval.json").read_text())
    assert list(report["results"]) == ["clean", "autoattack"] and "autoattack" in out
    assert report["results"]["autoattack"]["error"] == 100.0
    # one process attacks all 8 (clean-correct) examples; under torchrun each rank records its share
    split = {k: v for k, v in report["results"]["autoattack"].items() if k != "error"}
    assert split["batch_size"] == 500 and split["examples_per_rank"] == [8] and len(split["seconds_per_rank"]) == 1
    assert "apgd-t" in repr(AutoAttack(torch.nn.Linear(1, 1), eps=0.1, seed=3))
