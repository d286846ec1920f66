"""AutoAttack in the white-box tables and tradeoff.png, for `iat reproduce` and `iat demo`, on tiny digits runs;
and the same paths without the optional extra (the column skipped in one line)."""

from __future__ import annotations

import json
import logging

import pytest

import iat.attacks.autoattack as aa_module
from iat.analysis.plots import plot_tradeoff
from iat.demo import demo_experiment, run_demo
from iat.reproduce import reproduce
from iat.reproduce.paper import paper_entry
from iat.reproduce.tasks import AUTOATTACK_SKIPPED

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
needs_extra = pytest.mark.skipif(not aa_module.autoattack_available(),
                                 reason="the optional extra is not installed: pip install 'iat[autoattack]'")
METHODS = ["erm", "pgd"]
PNG = b"\x89PNG"


def tiny_table(tmp_path, autoattack_limit: int = 4):
    """A white-box table on digits: two methods, one epoch of a width-8 cnn-small, 40 test images."""
    toml = tmp_path / "tiny.toml"
    toml.write_text(f'''name = "tiny"
title = "tiny white-box table"
kind = "whitebox"
methods = {json.dumps(METHODS)}
[paper]
dataset = "digits"
arch = "cnn-small"
width = 8
epochs = 1
eps = 0.1
step_size = 0.025
attack_steps = 2
test_size = 40
attacks = ["clean", "pgd20"]
eval_eps = 0.1
eval_step_size = 0.025
autoattack_limit = {autoattack_limit}
''')
    return str(toml)


@pytest.mark.slow
@needs_extra
def test_reproduce_adds_autoattack_and_writes_tradeoff(tmp_path):
    out = tmp_path / "out"
    # in this process: no workers to start (the pool's path: tests/test_reproduce.py's smoke tests)
    results = reproduce(tiny_table(tmp_path), out=out, seeds=2, progress=False, jobs=1)
    wb = results["ours"]["whitebox"]
    for m in METHODS:
        cell = wb["methods"][m]["autoattack"]  # ours.whitebox.methods.METHOD.autoattack.mean (interfaces.md)
        assert list(wb["methods"][m]) == ["clean", "pgd20", "autoattack"]
        assert 0 <= cell["mean"] <= 100 and len(cell["values"]) == 2
        # the worst case over four attacks is at least PGD-20's error on the same images, up to one image
        assert cell["mean"] >= wb["autoattack"]["same_images"][m]["pgd20"]["mean"] - 100 / 4
    meta = wb["autoattack"]
    assert (meta["version"], meta["n_examples"], meta["eps"]) == ("standard", 4, 0.1)
    assert meta["components"] == ["apgd-ce", "apgd-t", "fab-t", "square"] and "pyautoattack" in meta["package"]
    assert json.loads((out / "results.json").read_text())["ours"] == results["ours"]
    report = (out / "report.md").read_text()
    assert "AutoAttack (first 4 test images)" in report and "not in the paper" in report
    assert "(tradeoff.png)" in report and (out / "tradeoff.png").read_bytes()[:4] == PNG
    # cached: a second call attacks nothing again
    assert reproduce(tiny_table(tmp_path), out=out, seeds=2, progress=False, jobs=1)["ours"] == results["ours"]


@pytest.mark.slow
def test_without_the_extra_the_column_is_skipped_in_one_line(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(aa_module, "autoattack_available", lambda: False)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="iat"):
        results = reproduce(tiny_table(tmp_path), out=out, progress=False, jobs=1)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [AUTOATTACK_SKIPPED]
    assert "pip install 'iat[autoattack]'" in AUTOATTACK_SKIPPED
    wb = results["ours"]["whitebox"]
    assert "autoattack" not in wb and all(list(c) == ["clean", "pgd20"] for c in wb["methods"].values())
    report = (out / "report.md").read_text()
    assert "AutoAttack (first" not in report and AUTOATTACK_SKIPPED in report
    assert (out / "tradeoff.png").read_bytes()[:4] == PNG


@pytest.mark.parametrize("extra", [pytest.param(True, marks=needs_extra), False])
def test_demo_writes_autoattack_claims_and_tradeoff(tmp_path, monkeypatch, extra):
    if not extra:
        monkeypatch.setattr(aa_module, "autoattack_available", lambda: False)
    exp = demo_experiment(METHODS, dataset="digits", arch="cnn-small", width=8, epochs=1, train_size=None,
                          test_size=40, autoattack_limit=5, attack_steps=2)
    out = tmp_path / "demo"
    results = run_demo(exp, out, seeds=1, progress=False, jobs=1)
    saved = json.loads((out / "results.json").read_text())
    table = (out / "table.md").read_text()
    assert (out / "tradeoff.png").read_bytes()[:4] == PNG
    for m in METHODS:  # interfaces.md: {"mean", "std"} per cell
        assert all(set(c) == {"mean", "std"} for c in saved["methods"][m].values())
        assert ("autoattack" in saved["methods"][m]) == extra
    if extra:
        assert saved["autoattack"]["n_examples"] == 5 and saved["autoattack"]["version"] == "standard"
        assert "AutoAttack (first 5 test images)" in table
        claims = [c for c in results["claim"] if c.startswith("AutoAttack ")]
        assert len(claims) == 2 and all("PGD-20" in c and "first 5 test images" in c for c in claims)
    else:
        assert "autoattack" not in saved and "AutoAttack (first" not in table and AUTOATTACK_SKIPPED in table


def test_tradeoff_plot_with_the_papers_points(tmp_path):
    cell = {"mean": 20.0, "std": 1.0}
    ours = {m: {"clean": cell, "pgd20": {"mean": 50.0, "std": 2.0}, "autoattack": {"mean": 55.0, "std": 2.0}}
            for m in ("erm", "mixup", "manifold-mixup", "pgd", "iat-mixup", "iat-manifold-mixup")}
    plot_tradeoff(ours, tmp_path / "t.png", "t", paper=paper_entry("table2"), autoattack_n=20)
    del ours["pgd"]["autoattack"]
    plot_tradeoff(ours, tmp_path / "u.png", "u")
    assert (tmp_path / "t.png").read_bytes()[:4] == PNG and (tmp_path / "u.png").read_bytes()[:4] == PNG
