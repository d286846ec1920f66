"""`iat train` -> `iat eval` through the command line, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

IAT = [sys.executable, "-m", "iat.cli"]


def iat(*args, check=True):
    proc = subprocess.run(IAT + [str(a) for a in args], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"iat {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.mark.slow
def test_train_then_eval_writes_the_files_of_interfaces_md(tmp_path):
    run = tmp_path / "run"
    iat("train", "--method", "iat-mixup", "--dataset", "digits", "--arch", "cnn-small", "--width", "4",
        "--epochs", "2", "--eps", "8/255", "--step-size", "2/255", "--attack-steps", "2", "--out", run, "-q")
    assert {p.name for p in run.iterdir()} >= {"config.json", "model.safetensors", "metrics.jsonl"}
    config = json.loads((run / "config.json").read_text())
    assert config["method"] == "iat-mixup" and config["eps"] == pytest.approx(8 / 255)
    assert config["attack_bn"] == "eval" and config["lam_per"] == "batch" and config["epochs"] == 2
    assert "torch_version" in config and "iat_version" in config and config["seed"] == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all({"epoch", "lr", "train_loss", "seconds"} <= r.keys() for r in rows)

    proc = iat("eval", run, "--attacks", "clean,fgsm,pgd3", "--eps", "0.1", "--step-size", "0.025",
               "--limit", "50", "-q")
    assert "pgd3" in proc.stdout and "0.1" in proc.stdout
    report = json.loads((run / "eval.json").read_text())
    assert report["dataset"] == "digits" and report["split"] == "test" and report["n_examples"] == 50
    assert report["eps"] == 0.1 and report["step_size"] == 0.025
    assert list(report["results"]) == ["clean", "fgsm", "pgd3"]
    assert all(0 <= r["error"] <= 100 for r in report["results"].values())

    import iat as lib

    model = lib.load_model(run)
    x, y = lib.load_data("digits", split="test", limit=4)
    assert not model.training and model(x).shape == (4, 10)


@pytest.mark.parametrize("args,needle", [
    (["train", "--method", "sgd", "--dataset", "digits", "--arch", "cnn-small"], "unknown method 'sgd'"),
    (["train", "--method", "pgd", "--dataset", "imagenet", "--arch", "cnn-small"], "unknown dataset"),
    (["train", "--method", "pgd", "--dataset", "digits", "--arch", "vgg"], "unknown architecture"),
    (["train", "--method", "pgd", "--dataset", "digits", "--arch", "cnn-small", "--eps", "8"], "8/255"),
    (["train", "--method", "pgd", "--dataset", "digits", "--arch", "cnn-small", "--epochs", "0"], "0 is outside [1"),
    (["train", "--method", "pgd", "--dataset", "digits", "--arch", "cnn-small", "--lr", "abc"], "not a number"),
    (["eval", "RUN", "--attacks", "pgdx"], "unknown attack"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, needle):
    out = tmp_path / "out"
    args = [str(tmp_path) if a == "RUN" else a for a in args]
    if args[0] == "train":
        args += ["--out", str(out)]
    proc = iat(*args, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists()


def test_train_help_lists_the_methods_data_sets_and_architectures(capsys, monkeypatch):
    from iat.cli import main
    from iat.methods import method_names

    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks inside hyphenated names
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert all(name in text for name in [*method_names(), "fashion-mnist", "cifar100", "preactresnet18", "wrn28-10"])
