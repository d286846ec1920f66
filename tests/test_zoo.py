"""rb:NAME: a RobustBench zoo model loaded offline from a checkpoint in RobustBench's folder layout."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from iat.errors import UsageError
from iat.zoo import check_zoo_model, import_robustbench, load_zoo_model

NAME = "Ding2020MMA"  # a WRN-28-4 (5.8M parameters): the zoo's smallest CIFAR-10 L-inf model
needs_rb = pytest.mark.skipif(importlib.util.find_spec("robustbench") is None, reason="robustbench is not installed")


@needs_rb
def test_a_checkpoint_in_robustbenchs_layout_loads_offline_with_its_logits(tmp_path):
    import_robustbench()  # robustbench 1.1.1 imports only through iat.zoo's compatibility shims
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    torch.manual_seed(0)
    reference = model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf][NAME]["model"]().eval()
    folder = tmp_path / "models" / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, folder / f"{NAME}.pt")
    model = load_zoo_model(f"rb:{NAME}", model_dir=tmp_path / "models")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-5)
    assert sorted(p.name for p in folder.iterdir()) == [f"{NAME}.pt"]  # nothing fetched or added


@needs_rb
@pytest.mark.parametrize("spec, dataset, fragment", [
    ("rb:Ding2020MMX", "cifar10", "unknown RobustBench model 'rb:Ding2020MMX' for cifar10 Linf (close: Ding2020MMA"),
    (f"rb:{NAME}", "cifar10", "or add --download to fetch it"),
    (f"rb:{NAME}", "fashion-mnist", "RobustBench ranks no fashion-mnist models"),
])
def test_bad_zoo_input_is_one_line_and_creates_nothing(tmp_path, spec, dataset, fragment):
    with pytest.raises(UsageError) as e:
        check_zoo_model(spec, model_dir=tmp_path / "models", dataset=dataset)
    assert fragment in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_robustbench_missing_is_one_line_naming_the_extra(monkeypatch):
    import iat.zoo

    real = importlib.util.find_spec
    monkeypatch.setattr(iat.zoo.importlib.util, "find_spec", lambda n, *a: None if n == "robustbench" else real(n, *a))
    with pytest.raises(UsageError, match=r"pip install 'iat\[robustbench\]'"):
        check_zoo_model(f"rb:{NAME}")


def test_the_robustbench_extra_fits_the_timm_and_autoattack_extras():
    """`pip install -e '.[robustbench,timm,autoattack]'` resolves only if robustbench's own pins lie inside our
    extras' ranges (checked here offline; resolved with pip by hand: pip install --dry-run -e '.[...]')."""
    import sys
    from pathlib import Path

    from packaging.requirements import Requirement

    tomllib = __import__("tomllib" if sys.version_info >= (3, 11) else "tomli")
    extras = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    ours = {Requirement(r).name: Requirement(r).specifier for name in ("timm", "autoattack") for r in extras[name]}
    assert any(Requirement(r).name == "robustbench" for r in extras["robustbench"])
    pins = {"timm": "1.0.9", "pyautoattack": "0.2.0"}  # robustbench 1.1.1: timm==1.0.9, pyautoattack>=0.2.0
    for package, version in pins.items():
        assert ours[package].contains(version), f"{package} {version} is outside our extra's {ours[package]}"


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_protocol_robustbench_refuses_a_data_set_robustbench_does_not_rank(trained_runs, capsys):
    from iat.cli import main

    run = trained_runs["pgd"]  # digits, as Fashion-MNIST: no RobustBench leaderboard
    before = _files(run)
    assert main(["-q", "eval", str(run), "--protocol", "robustbench"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RobustBench ranks cifar10 and cifar100 models (Linf), not digits" in err, err
    assert _files(run) == before


@needs_rb
def test_protocol_robustbench_writes_the_claim_and_eval_json(tmp_path, monkeypatch, capsys):
    """RobustBench's benchmark itself (AutoAttack on 10,000 CIFAR images) is replaced by a stand-in that records
    how it was called; what iat makes of its answer is real."""
    import dataclasses
    import json

    import iat.rbeval
    from iat.cli import main
    from iat.config import TrainConfig, build_model
    from iat.rundir import files, tensors

    import_robustbench()
    import robustbench.eval
    from robustbench.utils import ModelInfo

    run = tmp_path / "cifar-run"
    run.mkdir()
    cfg = TrainConfig(method="pgd", dataset="cifar10", arch="cnn-small", width=4, epochs=1, device="cpu").validate()
    files.write_json(run / files.CONFIG, {**cfg.to_dict(), "in_channels": 3, "num_classes": 10, "image_size": 32})
    tensors.save_weights(run / files.WEIGHTS, build_model(cfg).state_dict())
    calls = []
    monkeypatch.setattr(iat.rbeval, "load_data", lambda *a, **k: None)  # no CIFAR-10 here
    monkeypatch.setattr(robustbench.eval, "benchmark", lambda model, **kw: calls.append(kw) or (0.8125, 0.4375))
    assert main(["-q", "eval", str(run), "--protocol", "robustbench", "--device", "cpu"]) == 0
    [kw] = calls
    assert (kw["n_examples"], kw["dataset"], kw["threat_model"], kw["eps"]) == (10_000, "cifar10", "Linf", cfg.eps)
    claim = json.loads((run / "robustbench/model_info/cifar10/Linf/cifar-run.json").read_text())
    assert list(claim) == [f.name for f in dataclasses.fields(ModelInfo)]
    assert (claim["eps"], claim["clean_acc"], claim["autoattack_acc"]) == ("8/255", "81.25", "43.75")
    report = json.loads((run / files.EVAL).read_text())
    assert report["protocol"] == "robustbench" and report["n_examples"] == 10_000
    assert report["results"] == {"clean": {"error": 18.75}, "autoattack": {"error": 56.25}}


def _zoo_checkpoint(model_dir):
    """Ding2020MMA's architecture, seeded, saved where RobustBench keeps it; returns the module."""
    import_robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    torch.manual_seed(0)
    reference = model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf][NAME]["model"]().eval()
    folder = model_dir / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    torch.save(reference.state_dict(), folder / f"{NAME}.pt")
    return reference


def _cifar_run(run):
    """A (untrained) cifar10 run directory written by hand: a run to compare the zoo model with."""
    from iat.config import TrainConfig, build_model
    from iat.rundir import files, tensors

    run.mkdir()
    cfg = TrainConfig(method="pgd", dataset="cifar10", arch="cnn-small", width=4, epochs=1, device="cpu").validate()
    files.write_json(run / files.CONFIG, {**cfg.to_dict(), "in_channels": 3, "num_classes": 10, "image_size": 32})
    tensors.save_weights(run / files.WEIGHTS, build_model(cfg).state_dict())


@needs_rb
def test_rb_models_in_eval_and_transfer_beside_a_run(tmp_path, monkeypatch, capsys):
    """No CIFAR-10 here: the test split is 8 random images (what is checked is the plumbing, not the numbers)."""
    import json

    import iat.rundir.read
    from iat.cli import main

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)
    monkeypatch.setattr(iat.rundir.read, "load_data", lambda *a, limit=None, **k: (x[:limit], y[:limit]))
    models = tmp_path / "models"
    reference = _zoo_checkpoint(models)
    _cifar_run(tmp_path / "run")
    spec = f"rb:{NAME}"
    assert main(["-q", "eval", spec, "--model-dir", str(models), "--out", str(tmp_path / "ev"), "--attacks",
                 "clean,fgsm", "--device", "cpu"]) == 0
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    with torch.no_grad():
        clean_error = 100 * (reference(x).argmax(1) != y).float().mean().item()
    assert report["run"] == spec and report["eps"] == pytest.approx(8 / 255) and report["n_examples"] == 8
    assert report["results"]["clean"]["error"] == pytest.approx(clean_error)
    assert main(["-q", "transfer", spec, str(tmp_path / "run"), "--eps", "1/255", "--steps", "1", "--model-dir",
                 str(models), "--out", str(tmp_path / "tr"), "--device", "cpu"]) == 0
    points = json.loads((tmp_path / "tr" / "transfer.json").read_text())["points"]
    assert {(p["source"], p["target"]) for p in points} == {(a, b) for a in (spec, str(tmp_path / "run"))
                                                            for b in (spec, str(tmp_path / "run"))}
    assert sorted(p.name for p in (models / "cifar10" / "Linf").iterdir()) == [f"{NAME}.pt"]  # nothing fetched


@needs_rb
@pytest.mark.parametrize("argv, fragment", [
    (["eval", "rb:Ding2020MMA"], "is a RobustBench model, not a run directory to write into: give --out DIR"),
    (["eval", "rb:Nobody2099", "--out", "ev"], "unknown RobustBench model 'rb:Nobody2099'"),
    (["eval", "rb:Ding2020MMA", "--out", "ev"], "or add --download to fetch it"),
    (["audit", "rb:Ding2020MMA", "--out", "au"], "or add --download to fetch it"),
])
def test_bad_rb_input_one_line_exit_2_nothing_written(tmp_path, monkeypatch, capsys, argv, fragment):
    from iat.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["-q", *argv, "--model-dir", "models"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err
    assert list(tmp_path.iterdir()) == []
