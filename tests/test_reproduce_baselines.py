"""`iat reproduce baselines`: variants (a method with settings of its own) in experiment files, one run giving a
last-weights and an averaged-weights row, RobustBench's published numbers beside ours, and the demo's TRADES row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iat.attacks import autoattack_available
from iat.cli import main
from iat.data import found_locally
from iat.errors import UsageError
from iat.methods import method_names, paper_method_names
from iat.reproduce import load_experiment, reproduce
from iat.reproduce.experiment import EXPERIMENTS_DIR
from iat.reproduce.paper import published_entry

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

BASELINES = ["pgd", "trades", "mart", "pgd+awp", "trades+awp", "iat-mixup", "iat-mixup+awp", "iat-trades"]


# ------------------------------------------------------------------------------------------ the config


def test_every_baseline_on_the_papers_schedule_with_robustbenchs_evaluation():
    exp = load_experiment("baselines")
    assert exp.methods == BASELINES
    for entry in exp.methods:
        cfg = exp.run_config(entry, 0)
        # like for like: the paper's schedule (Section 4.1) for every method and variant
        assert (cfg.dataset, cfg.arch, cfg.epochs, cfg.milestones, cfg.lr, cfg.batch_size) == (
            "cifar10", "preactresnet18", 200, [100, 150], 0.1, 64)
        assert (cfg.eps, cfg.step_size, cfg.attack_steps, cfg.ema) == (8 / 255, 2 / 255, 7, 0.999)
        assert cfg.method == entry.split("+")[0]
        assert cfg.awp == {"pgd+awp": 0.01, "trades+awp": 0.005, "iat-mixup+awp": 0.01}.get(entry, 0.0)
    assert exp.run_config("trades+awp", 0).awp_warmup == 10
    s = exp.settings  # AutoAttack on all 10,000 test images, clean error and PGD-20
    assert (s.autoattack_limit, s.test_size, s.attacks, s.eval_eps) == (10000, None, ["clean", "pgd20"], 8 / 255)
    smoke = load_experiment("baselines", "smoke")
    assert smoke.settings.dataset == "fashion-mnist" and smoke.settings.epochs <= 2
    assert smoke.settings.train_size <= 256 and smoke.settings.test_size <= 200
    assert smoke.run_config("trades+awp", 0).awp_warmup == 1  # AWP runs in the second of two epochs


VARIANT_TOML = '''name = "v"
title = "tiny"
kind = "whitebox"
methods = {methods}
[paper]
dataset = "digits"
arch = "cnn-small"
width = 8
epochs = 1
eps = 0.1
step_size = 0.025
attack_steps = 2
train_size = 512
test_size = 100
attacks = ["clean", "pgd20"]
eval_eps = 0.1
eval_step_size = 0.025
{extra}
[variants."pgd+awp"]
method = "pgd"
{variant}
'''


def write(tmp_path: Path, methods: str = '["pgd", "pgd+awp"]', extra: str = "", variant: str = "awp = 0.01") -> str:
    path = tmp_path / "v.toml"
    path.write_text(VARIANT_TOML.format(methods=methods, extra=extra, variant=variant))
    return str(path)


@pytest.mark.parametrize("methods, variant, message", [
    ('["pgd", "pgd+sam"]', "awp = 0.01", r"methods must be .* or the names in \[variants\] \(unknown: 'pgd\+sam'\)"),
    ('["pgd", "pgd"]', "awp = 0.01", "without repeats"),
    ('["pgd+awp"]', "eval_eps = 0.2", r"\[variants.pgd\+awp\] eval_eps: not a training setting"),
    ('["pgd+awp"]', "awp = 2.0", r"v.toml \[variants.pgd\+awp\]: .*--awp"),
    ('["pgd+awp"]', 'smoke = "fast"', r"\[variants.pgd\+awp\] smoke: expected a table"),
    ('["pgd+awp"]', "smoke = { epoch = 1 }", r"\[variants.pgd\+awp.smoke\] epoch: not a training setting"),
    ('["pgd+awp"]', "awp_warmup = -1", r"\[variants.pgd\+awp\] awp_warmup .* an integer >= 0"),
])
def test_a_bad_variant_is_refused_naming_the_file_and_the_key(tmp_path, methods, variant, message):
    text = write(tmp_path, methods, variant=variant)
    with pytest.raises(UsageError, match=message):
        load_experiment(text)


def test_a_variant_needs_a_method_and_a_plain_name(tmp_path):
    path = Path(write(tmp_path))
    path.write_text(path.read_text().replace('method = "pgd"\n', ""))
    with pytest.raises(UsageError, match=r"\[variants.pgd\+awp\]: needs method = one of"):
        load_experiment(str(path))
    plain = VARIANT_TOML.format(methods='["pgd"]', extra="", variant="")
    path.write_text(plain + '[variants."../up"]\nmethod = "pgd"\n')
    with pytest.raises(UsageError, match="run directory's name"):
        load_experiment(str(path))
    path.write_text(plain + '[variants.trades]\nmethod = "pgd"\n')
    with pytest.raises(UsageError, match="not a method's name"):
        load_experiment(str(path))


def test_the_command_refuses_a_bad_variant_in_one_line(tmp_path, capsys):
    text = write(tmp_path, variant="eval_eps = 0.2")
    assert main(["reproduce", text, "--out", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "eval_eps" in err and "v.toml" in err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------- end to end


def test_variants_and_averaged_weights_on_tiny_digits_runs(tmp_path):
    """Two runs (pgd, pgd+awp), each with --ema: four rows, each variant's own options in its run, and the
    averaged rows measured on the averaged weights. (AutoAttack on both weights: the smoke test below.)"""
    toml = write(tmp_path, extra="ema = 0.9")
    out = tmp_path / "out"
    results = reproduce(toml, out=out, progress=False, jobs=1)  # in this process: no workers to start
    assert sorted(results["trained"]) == [str(out / "pgd+awp-seed0"), str(out / "pgd-seed0")]
    configs = {d: json.loads((out / d / "config.json").read_text()) for d in ("pgd-seed0", "pgd+awp-seed0")}
    assert (configs["pgd-seed0"]["awp"], configs["pgd+awp-seed0"]["awp"]) == (0.0, 0.01)
    assert configs["pgd+awp-seed0"]["method"] == "pgd" and configs["pgd-seed0"]["ema"] == 0.9
    rows = results["ours"]["whitebox"]["methods"]
    assert list(rows) == ["pgd", "pgd+ema", "pgd+awp", "pgd+awp+ema"]
    assert results["runs"] == {"pgd": ["pgd-seed0"], "pgd+awp": ["pgd+awp-seed0"]}
    # each row is the evaluation of that weights file: the run's last, or its averaged, weights
    by_weights = json.loads((out / "cache" / "eval-pgd-seed0.json").read_text())["value"]["results_by_weights"]
    assert by_weights["last"] != by_weights["ema"]
    assert rows["pgd"]["clean"]["mean"] == by_weights["last"]["clean"]["error"]
    assert rows["pgd+ema"]["clean"]["mean"] == by_weights["ema"]["clean"]["error"]
    report = (out / "report.md").read_text()
    assert "PGD (7 steps) + AWP + EMA" in report and "`pgd+awp` = `pgd` with awp = 0.01" in report
    assert (out / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    again = reproduce(toml, out=out, progress=False, jobs=1)
    assert again["trained"] == [] and again["ours"] == results["ours"]


def test_the_report_puts_robustbenchs_numbers_beside_ours_with_their_architecture(tmp_path):
    path = Path(write(tmp_path, methods='["pgd"]'))  # one run: the published rows of trades and mart stay empty
    path.write_text(path.read_text().replace('name = "v"', 'name = "baselines"'))
    results = reproduce(str(path), out=tmp_path / "out", progress=False)
    assert results["published"] == published_entry("baselines")
    report = (tmp_path / "out" / "report.md").read_text()
    section = report.split("## Published numbers")[1].split("\n## ")[0]
    # Rice et al.'s PGD-AT: RobustBench's 85.34% clean, 53.42% AutoAttack, a WideResNet-34-20, not ours
    rice = next(line for line in section.splitlines() if "(Rice2020Overfitting)" in line)
    cells = [c.strip() for c in rice.strip("| ").split("|")]
    ours = results["ours"]["whitebox"]["methods"]["pgd"]["clean"]["mean"]
    assert cells[1:] == ["WideResNet-34-20", "no", "14.66", "46.58", f"{ours:.2f}", "—"]  # ours: no AutoAttack
    assert "trades" not in results["ours"]["whitebox"]["methods"] and "TRADES (Zhang et al. 2019)" in section
    assert "MART" in section and "| yes " in section  # MART's entry used extra data: said, not hidden
    assert "not recorded" in section and "PreActResNet-18" in section


def test_published_numbers_name_their_source_and_architecture():
    pub = published_entry("baselines")
    assert "RobustBench" in pub["source"] and pub["rows"]
    for row in pub["rows"]:
        assert row["method"] is None or row["method"] in method_names()
        assert row["architecture"] and row["entry"] and len(row["commit"]) == 40 and row["schedule"]
        assert 0 < row["autoattack_acc"] < row["clean_acc"] < 100  # robust accuracy below clean
    assert published_entry("table2") is None


@pytest.mark.slow
@pytest.mark.skipif(not found_locally("fashion-mnist"), reason="smoke scale uses Fashion-MNIST")
def test_baselines_smoke_through_the_command(tmp_path):
    """The whole experiment at smoke scale (minutes on a CPU): 8 runs, 16 rows, every row in the trade-off plot."""
    out = tmp_path / "b"
    assert main(["reproduce", "baselines", "--scale", "smoke", "--out", str(out), "-q"]) == 0
    results = json.loads((out / "results.json").read_text())
    rows = results["ours"]["whitebox"]["methods"]
    assert list(rows) == [r for m in BASELINES for r in (m, f"{m}+ema")]
    if autoattack_available():  # on each run's last and averaged weights, each cached apart
        assert all("autoattack" in cells for cells in rows.values())
        assert (out / "cache" / "autoattack-pgd+awp-seed0-ema.json").is_file()
        last, ema = (json.loads((out / "cache" / f"autoattack-pgd-seed0{s}.json").read_text())["value"]
                     for s in ("", "-ema"))
        assert rows["pgd"]["autoattack"]["mean"] == last["results"]["autoattack"]
        assert rows["pgd+ema"]["autoattack"]["mean"] == ema["results"]["autoattack"]
    report = (out / "report.md").read_text()
    assert "SMOKE RUN" in report and "## Published numbers" in report and "(tradeoff.png)" in report


# ------------------------------------------------------------------------------------- the demo's TRADES row


def test_the_demo_takes_trades_after_the_papers_six(tmp_path, monkeypatch):
    from iat.cli import build_parser
    from iat.cli import demo as demo_cli
    from iat.demo import demo_experiment

    seen = {}

    def stop(exp, *a, **k):
        seen["exp"] = exp
        raise SystemExit(0)

    monkeypatch.setattr("iat.demo.run_demo", stop)
    args = build_parser().parse_args(["demo", "--out", str(tmp_path / "d"),
                                      "--methods", ",".join(paper_method_names() + ["trades"])])
    with pytest.raises(SystemExit):
        demo_cli.run(args)
    exp = seen["exp"]
    assert exp.methods == paper_method_names() + ["trades"]
    assert exp.run_config("trades", 0).beta == 6.0  # TRADES's own beta, with the demo's budget
    assert exp.settings == demo_experiment().settings
    assert load_experiment("demo").methods == paper_method_names()  # the default stays the paper's six
    assert (EXPERIMENTS_DIR / "baselines.toml").is_file()
