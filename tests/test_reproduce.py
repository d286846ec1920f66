"""`iat reproduce`: the configs hold the paper's settings; smoke runs end to end; a second call trains nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iat.attacks import autoattack_available
from iat.cli import main
from iat.data import found_locally
from iat.errors import UsageError
from iat.methods import paper_method_names
from iat.reproduce import SCALES, experiment_names, load_experiment, load_paper_numbers, reproduce
from iat.reproduce.experiment import EXPERIMENTS_DIR

NEEDS_FASHION_MNIST = pytest.mark.skipif(not found_locally("fashion-mnist"),
                                         reason="smoke scale uses Fashion-MNIST (`make data`, or Debian's package)")

TABLES = [f"table{i}" for i in range(1, 8)]
TRAIN_FIELDS = ("dataset", "arch", "width", "epochs", "milestones", "lr", "batch_size", "momentum", "weight_decay",
                "eps", "step_size", "attack_steps", "mixup_alpha", "manifold_alpha", "train_size")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ------------------------------------------------------------------------------------------ configs


def test_every_table_and_figure_has_a_config_at_both_scales():
    beside_the_paper = {"cifar100", "generated", "baselines"}
    assert set(experiment_names()) == set(TABLES) | {"fig1", "probe"} | beside_the_paper
    for name in experiment_names():
        for scale in SCALES:
            exp = load_experiment(name, scale)
            assert exp.name == name and exp.scale == scale


@pytest.mark.parametrize("name", TABLES + ["probe", "fig1"])
def test_paper_scale_settings_are_the_papers(name):
    s = load_experiment(name, "paper").settings
    # Section 4.1: 200 epochs, lr 0.1 /10 at 100 and 150, batch 64, PGD-7 of 2/255 in 8/255 (fig1: its own eps)
    assert (s.epochs, s.milestones, s.lr, s.batch_size, s.attack_steps) == (200, [100, 150], 0.1, 64, 7)
    assert (s.mixup_alpha, s.manifold_alpha, s.train_size, s.test_size, s.width) == (1.0, 2.0, None, None, None)
    if name != "fig1":
        assert (s.eps, s.step_size) == (8 / 255, 2 / 255)


def test_configs_agree_with_the_papers_tables():
    numbers = load_paper_numbers()
    for name in ("table1", "table2", "table3", "table4"):
        exp = load_experiment(name)
        assert (exp.settings.dataset, exp.settings.arch) == (numbers[name]["dataset"], numbers[name]["arch"])
        assert exp.settings.attacks == numbers[name]["columns"]
        assert (exp.settings.eval_eps, exp.settings.eval_step_size) == (8 / 255, 2 / 255)
        assert sorted(exp.methods) == sorted(paper_method_names())
    t5, t6, t7 = (load_experiment(n).settings for n in ("table5", "table6", "table7"))
    assert t5.eval_eps_list == [e / 255 for e in numbers["table5"]["eps_255"]] and t5.eval_steps == 20
    assert t6.eval_eps_list == [e / 255 for e in numbers["table6"]["eps_255"]] and t6.eval_steps == 20
    assert t7.eval_steps_list == numbers["table7"]["steps"] and t7.eval_eps == 5 / 255
    probe = load_experiment("probe").settings
    assert (probe.probe_n, probe.probe_epochs) == (numbers["probe"]["n"], numbers["probe"]["epochs"])
    fig1 = load_experiment("fig1").settings
    assert (fig1.dataset, fig1.arch, fig1.width) == ("fashion-mnist", "mlp6", None)  # 6 layers of 512 units


def test_tables_1_to_4_add_autoattack_on_a_subset():
    for name in ("table1", "table2", "table3", "table4"):
        assert load_experiment(name).settings.autoattack_limit == 1000  # RobustBench's quick-check subset
        assert load_experiment(name, "smoke").settings.autoattack_limit == 20
    assert load_experiment("table5").settings.autoattack_limit is None


@pytest.mark.parametrize("name", ["table5", "table6", "table7", "probe"])
def test_tables_5_to_7_and_the_probe_train_as_table2(name):
    table2 = load_experiment("table2").settings
    s = load_experiment(name).settings
    assert [getattr(s, f) for f in TRAIN_FIELDS] == [getattr(table2, f) for f in TRAIN_FIELDS]


@pytest.mark.parametrize("name", TABLES + ["probe", "fig1"])
def test_smoke_scale_is_small_and_uses_fashion_mnist(name):
    exp = load_experiment(name, "smoke")
    s = exp.settings
    assert s.dataset == "fashion-mnist" and s.epochs <= 3 and s.train_size <= 2000 and s.test_size <= 500
    changed = {k for k, _, _ in exp.substitutions()}
    assert {"epochs", "train_size", "test_size"} <= changed
    assert ("dataset" in changed) == (load_experiment(name).settings.dataset != "fashion-mnist")


def test_config_errors_name_the_file_and_the_key(tmp_path):
    text = (EXPERIMENTS_DIR / "table2.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("[smoke]\n", "[smoke]\nepoch = 3\n"))
    with pytest.raises(UsageError, match=r"bad.toml \[smoke\] epoch: unknown setting"):
        load_experiment(str(bad), "smoke")
    bad.write_text(text.replace("epochs = 200", 'epochs = "two hundred"'))
    with pytest.raises(UsageError, match=r"\[paper\] epochs .* expected a positive integer"):
        load_experiment(str(bad))
    bad.write_text(text.replace('eval_eps = "8/255"', "eval_eps = 8"))
    with pytest.raises(UsageError, match="8/255"):
        load_experiment(str(bad))
    with pytest.raises(UsageError, match="table1, table2"):
        load_experiment("table9")
    with pytest.raises(UsageError, match="--scale"):
        load_experiment("table2", "huge")


def test_a_missing_data_set_fails_before_any_output(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    with pytest.raises(UsageError, match="cifar10") as e:
        reproduce("table2", out=out, data_dir=str(empty), progress=False)
    assert "download" in str(e.value) and "--scale smoke" in str(e.value)
    assert not out.exists()


# ---------------------------------------------------------------------------------------- end to end


def stamps(out: Path) -> dict[str, int]:
    files = [*out.glob("*/model.safetensors"), *out.glob("*/checkpoint.pt"), *out.glob("cache/*.json")]
    return {str(p): p.stat().st_mtime_ns for p in files}


@pytest.mark.slow
@NEEDS_FASHION_MNIST
def test_table2_smoke_end_to_end_then_a_second_call_trains_nothing(tmp_path):
    out = tmp_path / "t2"
    first = reproduce("table2", out=out, scale="smoke", progress=False)
    assert sorted(first["trained"]) == sorted(str(out / f"{m}-seed0") for m in paper_method_names())
    methods = first["ours"]["whitebox"]["methods"]
    assert set(methods) == set(paper_method_names())
    autoattack = ["autoattack"] if autoattack_available() else []  # on the first 20 test images (table2.toml)
    for m, cells in methods.items():
        assert list(cells) == ["clean", "fgsm", "pgd7", "pgd20"] + autoattack
        errors = [cells[a]["mean"] for a in ("clean", "fgsm", "pgd7", "pgd20")]
        assert all(0 <= e <= 100 for e in errors) and cells["clean"]["std"] == 0.0
        assert errors[0] <= errors[2] <= errors[3], m  # attacks only add errors; more PGD steps, more errors
    assert json.loads((out / "results.json").read_text()) == first
    report = (out / "report.md").read_text()
    assert "SMOKE RUN" in report and "CIFAR-10 was replaced by Fashion-MNIST" in report
    assert "14.12 ± 0.06" in report  # the paper's PGD row beside ours
    assert "| Interpolated Adversarial Training (Manifold Mixup) |" in report.replace("  ", "")
    assert (out / "whitebox.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "tradeoff.png").read_bytes()[:4] == b"\x89PNG" and "(tradeoff.png)" in report
    assert ("AutoAttack (first 20 test images)" in report) == bool(autoattack)

    # Calls on a finished or nearly finished directory: in this process, no pool of workers to start; the
    # same numbers as the pool's above.
    before = stamps(out)
    second = reproduce("table2", out=out, scale="smoke", progress=False, jobs=1)
    assert second["trained"] == []
    assert stamps(out) == before  # no run trained, no measurement redone
    assert second["ours"] == first["ours"]

    # An unfinished run (its weights not yet written) is resumed from its checkpoint, and only it.
    (out / "pgd-seed0" / "model.safetensors").unlink()
    third = reproduce("table2", out=out, scale="smoke", progress=False, jobs=1)
    assert third["trained"] == [str(out / "pgd-seed0")]
    assert third["ours"] == first["ours"]  # the same weights, so the same numbers


@pytest.mark.slow
@NEEDS_FASHION_MNIST
def test_fig1_smoke_end_to_end_through_the_command(tmp_path, capsys):
    out = tmp_path / "f1"
    assert main(["reproduce", "fig1", "--scale", "smoke", "--out", str(out), "-q"]) == 0
    assert "Weight norms per layer" in capsys.readouterr().out
    norms = json.loads((out / "norms.json").read_text())
    assert sorted(Path(r).name for r in norms["runs"]) == sorted(
        f"{m}-seed0" for m in ("erm", "pgd", "iat-mixup", "iat-manifold-mixup"))
    for rows in norms["runs"].values():
        assert len(rows) == 6 and rows[-1]["layer"] == "head"
        assert all(0 < r["spectral"] <= r["frobenius"] for r in rows)
    results = json.loads((out / "results.json").read_text())
    claims = results["ours"]["norms"]["claims"]
    assert len(claims) == 4 and all(isinstance(c["holds"], bool) for c in claims)
    report = (out / "report.md").read_text()
    assert "SMOKE RUN" in report and "![Frobenius and spectral norms per layer](norms.png)" in report
    assert (out / "norms.png").read_bytes()[:4] == b"\x89PNG"

    assert main(["reproduce", "fig1", "--scale", "smoke", "--out", str(out), "-q", "--jobs", "1"]) == 0  # no pool
    assert json.loads((out / "results.json").read_text())["trained"] == []
    capsys.readouterr()
    # The directory holds fig1: another experiment is refused before it touches anything.
    assert main(["reproduce", "table2", "--scale", "smoke", "--out", str(out), "-q"]) == 2
    assert "fig1" in capsys.readouterr().err
    assert main(["reproduce", "fig1", "--out", str(out), "-q"]) == 2  # the paper scale is not the smoke scale


ROBUSTNESS_EVAL = {
    "table5": 'eval_eps_list = ["2/255", "10/255"]\neval_steps = 3\n',
    "table6": 'eval_eps_list = ["1/255", "50/255"]\neval_steps = 3\n',
    "table7": 'eval_steps_list = [1, 5]\neval_eps = "5/255"\n',
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ROBUSTNESS_EVAL))
def test_tables_5_to_7_on_tiny_digits_runs(name, tmp_path):
    pytest.importorskip("iat.robustness")
    kind = {"table5": "transfer", "table6": "sweep-eps", "table7": "sweep-steps"}[name]
    toml = tmp_path / f"{name}.toml"
    toml.write_text(f'''name = "{name}"
title = "tiny"
kind = "{kind}"
methods = ["pgd", "iat-mixup", "iat-manifold-mixup"]
[paper]
dataset = "digits"
arch = "cnn-small"
width = 8
epochs = 1
eps = 0.1
step_size = 0.025
attack_steps = 2
test_size = 100
{ROBUSTNESS_EVAL[name]}''')
    out = tmp_path / "out"
    # in this process: no workers to start (the pool's path is the smoke tests' above)
    results = reproduce(str(toml), out=out, seeds=2, progress=False, jobs=1)
    ours = results["ours"][kind.replace("-", "_")]
    keys = {"transfer": ("eps", "source", "target"), "sweep-eps": ("method", "eps"),
            "sweep-steps": ("method", "steps")}[kind]
    n_cells = {"transfer": 2 * 3 * 3, "sweep-eps": 3 * 2, "sweep-steps": 3 * 2}[kind]
    assert len(ours["points"]) == n_cells
    for p in ours["points"]:
        assert set(keys) <= set(p) and len(p["values"]) == 2 and 0 <= p["mean"] <= 100  # two seeds each
    file = {"transfer": "transfer.json", "sweep-eps": "sweep-eps.json", "sweep-steps": "sweep-steps.json"}[kind]
    assert len(json.loads((out / file).read_text())["points"]) == 2 * n_cells
    report = (out / "report.md").read_text()
    assert f"**Paper (Table {name[-1]})**" in report and f"({file.replace('.json', '.png')})" in report
    again = reproduce(str(toml), out=out, seeds=2, progress=False, jobs=1)
    assert again["trained"] == [] and again["ours"] == results["ours"]
