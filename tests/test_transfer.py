"""`iat transfer` (Table 5): the diagonal is white-box, cells count clean errors, white-box beats transfer."""

from __future__ import annotations

import json

import pytest
from conftest import DIGITS_EPS
from test_sweep import iat

from iat.attacks import AttackBudget
from iat.attacks.worstcase import error_pct, predict
from iat.data import load_data
from iat.evaluate import evaluate
from iat.robustness import transfer_matrix, transfer_table
from iat.rundir.read import load_run_model

pytestmark = pytest.mark.usefixtures("one_thread")
LIMIT = 150


@pytest.fixture(scope="module")
def result(trained_runs, one_thread):
    return transfer_matrix([trained_runs["erm"], trained_runs["pgd"]], [DIGITS_EPS, 0.05], steps=10, limit=LIMIT,
                           device="cpu")


def cells(result):
    return {(p["eps"], p["source"], p["target"]): p["error"] for p in result["points"]}


def test_every_cell_with_the_white_box_diagonal(trained_runs, result):
    erm, pgd = str(trained_runs["erm"]), str(trained_runs["pgd"])
    c = cells(result)
    assert len(result["points"]) == 8 and set(c) == {(e, s, t) for e in (0.05, DIGITS_EPS)
                                                     for s in (erm, pgd) for t in (erm, pgd)}
    assert [p["eps"] for p in result["points"]] == [0.05] * 4 + [DIGITS_EPS] * 4
    x, y = load_data("digits", "test", limit=LIMIT)
    for run in (erm, pgd):
        model = load_run_model(run)
        clean = error_pct(predict(model, x) == y)
        for eps in (0.05, DIGITS_EPS):
            white = evaluate(model, x, y, ["pgd10"], budget=AttackBudget(eps, eps / 4))["pgd10"]["error"]
            assert c[eps, run, run] == white  # the diagonal is `iat eval`'s white-box error
            assert all(c[eps, s, run] >= clean for s in (erm, pgd))  # clean errors count in every cell
            other = pgd if run == erm else erm
            assert c[eps, run, run] > c[eps, other, run], "white-box should beat transfer on honest models"
    # larger eps transfers better
    assert c[DIGITS_EPS, erm, pgd] >= c[0.05, erm, pgd] and c[DIGITS_EPS, pgd, erm] >= c[0.05, pgd, erm]


def test_table_in_the_paper_layout(result):
    lines = transfer_table(result).splitlines()
    assert lines[0].startswith("| Attack \\ Target")
    assert lines[0].index("ε=0.05 erm") < lines[0].index("ε=0.05 pgd") < lines[0].index("ε=0.1 erm")
    assert [line.split("|")[1].strip() for line in lines[2:4]] == ["erm", "pgd"]
    assert lines[2].split("|")[2].strip().endswith("*") and not lines[2].split("|")[3].strip().endswith("*")


def test_transfer_command(trained_runs, tmp_path, capsys):
    erm, pgd = trained_runs["erm"], trained_runs["pgd"]
    _, out, _ = iat(capsys, "transfer", erm, pgd, "--eps", "2/255,0.1", "--steps", "3", "--limit", 30,
                    "--out", tmp_path, "-q")
    assert "Attack \\ Target" in out and "2/255" in out
    data = json.loads((tmp_path / "transfer.json").read_text())
    assert data["steps"] == 3 and len(data["points"]) == 8
    assert all(set(p) == {"eps", "source", "target", "error"} for p in data["points"])
    assert {p["eps"] for p in data["points"]} == {2 / 255, 0.1}
    for args, needle in [([erm], "at least two"), ([erm, erm], "twice"), ([erm, pgd, "--eps", "2"], "8/255")]:
        code, _, err = iat(capsys, "transfer", *args, *(["--eps", "0.1"] if "--eps" not in args else []),
                           "--out", tmp_path / "bad", check=False)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "bad").exists()
