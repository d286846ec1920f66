"""`iat demo` end to end at a tiny size: results.json and table.md as interfaces.md says."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from iat.attacks import autoattack_available
from iat.data import found_locally

pytestmark = [pytest.mark.slow,  # whole demos, if small ones
              pytest.mark.skipif(not found_locally("fashion-mnist"),
                                 reason="Fashion-MNIST not found (`make data`, or Debian's dataset-fashion-mnist)")]

METHODS = ["erm", "mixup", "manifold-mixup", "pgd", "iat-mixup", "iat-manifold-mixup"]


def test_demo_writes_results_and_table(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "iat", "demo", "--out", str(out), "--epochs", "1", "--train-size", "128",
           "--test-size", "20", "--seeds", "2", "--jobs", "2", "--arch", "mlp6", "-q"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    autoattack = ["autoattack"] if autoattack_available() else []  # on the first 20 (all) test images here
    assert results["dataset"] == "fashion-mnist" and results["seeds"] == [0, 1]
    assert list(results["methods"]) == METHODS
    for method in METHODS:
        cells = results["methods"][method]
        assert list(cells) == ["clean", "fgsm", "pgd7", "pgd20"] + autoattack
        assert all(set(c) == {"mean", "std"} and 0 <= c["mean"] <= 100 for c in cells.values())
        for seed in (0, 1):
            assert (out / f"{method}-seed{seed}" / "model.safetensors").is_file()
    table = (out / "table.md").read_text()
    for column in ["No attack", "FGSM", "PGD (7 steps)", "PGD (20 steps)", "Interpolated Adversarial Training"]:
        assert column in table
    assert "±" in table and "Wall time of this call" in table and "PGD training raised clean error" in table
    assert "PGD (20 steps)" in proc.stdout and "wall time" in proc.stdout
    assert ("AutoAttack (first 20 test images)" in table) == bool(autoattack)
    assert (out / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"

    # a second call finds every run finished and trains nothing (one job: no pool of workers to start)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/model.safetensors")}
    proc = subprocess.run(cmd + ["--jobs", "1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and stamps == {p: p.stat().st_mtime_ns for p in out.glob("*/model.safetensors")}


def test_one_seed_prints_each_number_alone(tmp_path):
    """One seed has no spread: its table shows the number, not "± 0.00" (results.json keeps std 0.0)."""
    from iat.cli import main

    out = tmp_path / "demo"  # in this process: the table is the point here, the command line the test above's
    assert main(["demo", "--out", str(out), "--epochs", "1", "--train-size", "64", "--test-size", "10",
                 "--seeds", "1", "--jobs", "1", "--arch", "mlp6", "--methods", "erm", "-q"]) == 0
    table = (out / "table.md").read_text()
    assert "±" not in table.split("\n\n", 2)[-1] and "(one seed)" in table
    assert json.loads((out / "results.json").read_text())["methods"]["erm"]["clean"]["std"] == 0.0


def test_methods_are_shown_in_the_papers_order_once(tmp_path, monkeypatch):
    from iat.cli import demo as demo_cli

    seen = {}
    monkeypatch.setattr("iat.demo.demo_experiment", lambda methods, **kw: seen.setdefault("methods", methods))
    monkeypatch.setattr("iat.demo.run_demo", lambda *a, **k: (_ for _ in ()).throw(SystemExit(0)))
    args = demo_cli_args(["--out", str(tmp_path / "d"), "--methods", "pgd,erm,pgd"])
    with pytest.raises(SystemExit):
        demo_cli.run(args)
    assert seen["methods"] == ["erm", "pgd"]


def demo_cli_args(argv: list[str]):
    from iat.cli import build_parser

    return build_parser().parse_args(["demo", *argv])
