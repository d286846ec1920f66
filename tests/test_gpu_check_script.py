"""benchmarks/gpu_check.py, the one script a lent GPU runs: its control flow, on the CPU.

A device lease is minutes long and cannot be retried at will, so the script must not break on
anything the CPU can check: it parses, runs every section in order, keeps going when a section
fails, and writes its tables after each section. The GPU work itself is stubbed here; its CPU mode
(`--device cpu --quick`) runs the FLOP count, the timed variants under their own flags and the
profile for real, on a tiny model.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flags_now() -> tuple:
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,
            torch.get_float32_matmul_precision())


@pytest.fixture
def gpu_check(monkeypatch):
    module = load_script()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(module, "environment", lambda device: {"gpu": "stub", "cuda": "stub"})
    monkeypatch.setattr(module, "flop_count", lambda device, batch, width: {"error": "stubbed"})
    monkeypatch.setattr(module, "build_update", lambda cfg, device: lambda x, y: None)
    monkeypatch.setattr(module, "time_steps", lambda step, batch, warmup, timed, device: {
        "ms_per_step": 10.0, "images_per_s": batch * 100, "cifar_epoch_s": 5.0})
    monkeypatch.setattr(module, "profile_top", lambda step, batch, device: {
        "by": "CUDA time", "steps": 3, "top": [{"name": "sm90_conv", "us_per_step": 1.0, "calls_per_step": 2,
                                                "share": 0.5}]})
    monkeypatch.setattr(module, "sync_check", lambda: {"iat-graphs": "no host sync in 5 steps"})
    monkeypatch.setattr(module, "cuda_tests", lambda: {"returncode": 0, "tail": "20 passed"})
    monkeypatch.setattr(module, "real_runs", lambda *a: {"pgd/graphs": {"train_s": 1, "epoch_s": [1.0, 1.0],
                                                                        "clean": 20.0, "pgd20": 35.0}})
    return module


def test_every_section_runs_and_a_failing_one_is_recorded(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["gpu_check.py", "--out", str(tmp_path)])
    assert gpu_check.main() == 0
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    speed = results["speed"]
    assert "error" in speed["plain-backward@64"]  # builds a model on "cuda": fails here, and the rest goes on
    assert speed["iat-graphs-tf32-amp@512"]["ms_per_step"] == 10.0
    assert set(gpu_check.COMPILED_VARIANTS) == {k.split("@")[0] for k in speed if "compile" in k}
    assert all(k.endswith("@64") for k in speed if "compile" in k)  # compiled variants: batch 64 by default
    assert "profile" in speed[f"{gpu_check.PROFILED}@64"]  # the compiled graphed step, profiled on CUDA
    assert results["cuda_tests"]["returncode"] == 0 and "pgd/graphs" in results["real_runs"]
    md = (tmp_path / "gpu_check.md").read_text()
    row = "| iat-graphs-compile-tf32-amp-attack-cudnn | 64 | conv TF32 | 10.0 |"  # the stubbed step sets no flag
    assert row in md and "| pgd/graphs |" in md
    assert f"Profile of {gpu_check.PROFILED}@64" in md and "| `sm90_conv` | 1.0 | 2 | 50.0% |" in md


def test_skip_budget_and_batches_are_honoured(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["gpu_check.py", "--out", str(tmp_path), "--skip", "tests,runs,sync",
                                     "--batches", "512", "--variants", "iat-graphs-tf32-amp", "--budget", "60"])
    assert gpu_check.main() == 0
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert gpu_check.budget_s == 60
    assert set(results["speed"]) == {"iat-graphs-tf32-amp@512"} | {f"{v}@512" for v in gpu_check.COMPILED_VARIANTS}
    assert "cuda_tests" not in results and "real_runs" not in results and "sync_check" not in results


def test_every_run_mode_and_variant_name_means_an_option_set(gpu_check):
    for mode, flags in gpu_check.RUN_MODES.items():
        assert ("--compile" in flags) == ("compile" in mode) and ("--cuda-graphs" in flags) == ("graphs" in mode)
    cfg = gpu_check.cfg_for("iat-graphs-compile-tf32-amp-attack-cudnn", 64)
    assert (cfg.cuda_graphs, cfg.compile, cfg.tf32, cfg.amp, cfg.attack_precision, cfg.cudnn_benchmark) == (
        True, True, gpu_check.ON, True, "amp", gpu_check.ON)
    cfg.validate()  # iat train accepts what the script times
    assert gpu_check.flags_for("plain-backward") == gpu_check.STOCK_FLAGS == {
        "matmul_tf32": False, "cudnn_tf32": True, "cudnn_benchmark": False}  # what a fresh torch process has
    assert gpu_check.flags_for("plain-inputgrad-tf32-cudnn") == gpu_check.FAST_FLAGS


def test_any_batch_size_is_timed_and_a_failed_section_still_makes_tables(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["gpu_check.py", "--out", str(tmp_path), "--skip", "tests,runs,sync,compile",
                                     "--batches", "128", "--variants", "iat-graphs-tf32-amp"])
    assert gpu_check.main() == 0
    assert set(json.loads((tmp_path / "gpu_check.json").read_text())["speed"]) == {"iat-graphs-tf32-amp@128"}
    md = gpu_check.tables({"speed": {"error": "RuntimeError: boom", "traceback": "..."}, "real_runs": {}})
    assert "boom" in md


def test_a_variant_that_changes_torch_flags_does_not_leak_them_into_the_next(tmp_path, monkeypatch):
    gpu_check = load_script()
    seen = {}

    def leaky_update(cfg, device):  # as iat's --tf32 --cudnn-benchmark do, and a float32_matmul_precision too
        torch.set_float32_matmul_precision("medium")
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = False
        return lambda x, y: None

    def plain(cfg, device, attack_param_grads):
        return lambda x, y: seen.setdefault("plain", flags_now())

    monkeypatch.setattr(gpu_check, "build_update", leaky_update)
    monkeypatch.setattr(gpu_check, "plain_update", plain)
    before = flags_now()
    monkeypatch.setattr("sys.argv", ["gpu_check.py", "--out", str(tmp_path), "--device", "cpu", "--quick",
                                     "--skip", "flops", "--variants", "iat-leaky,plain-inputgrad"])
    assert gpu_check.main() == 0
    speed = json.loads((tmp_path / "gpu_check.json").read_text())["speed"]
    assert speed["iat-leaky@8"]["flags"] == {"matmul_tf32": True, "cudnn_tf32": False, "cudnn_benchmark": True}
    assert speed["plain-inputgrad@8"]["flags"] == gpu_check.STOCK_FLAGS
    assert seen["plain"] == (False, True, False, "highest")  # PyTorch's stock flags, in the next variant's steps
    assert flags_now() == before


def test_train_step_runs_each_variant_under_its_own_flags(monkeypatch):
    load_script()  # puts benchmarks/ on the path
    train_step = sys.modules["train_step"]
    seen = {}

    def tf32_update(cfg, device):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.benchmark = True
        return lambda x, y: seen.setdefault("iat", flags_now())

    monkeypatch.setattr(train_step, "build_update", tf32_update)
    monkeypatch.setattr(train_step, "plain_update", lambda cfg, device, attack_param_grads: (
        lambda x, y: seen.setdefault("plain", flags_now())))
    cfg = train_step.TrainConfig(method="iat-mixup", dataset="digits", arch="mlp6", width=8, device="cpu")
    before = flags_now()
    runners = [train_step.make_runner(v, cfg, torch.device("cpu")) for v in ("default", "plain-inputgrad")]
    assert flags_now() == before
    for run in runners:  # interleaved as measure() does: each step under its variant's flags
        run(None, None)
    assert seen == {"iat": (True, True, True, "high"), "plain": (False, True, False, "highest")}
    assert flags_now() == before


def test_cpu_quick_run_counts_flops_times_every_variant_and_profiles(tmp_path, monkeypatch, one_thread):
    gpu_check = load_script()
    before = flags_now()
    monkeypatch.setattr("sys.argv", ["gpu_check.py", "--out", str(tmp_path), "--device", "cpu", "--quick",
                                     "--profile", "--variants", "plain-backward,plain-inputgrad-tf32-cudnn,iat-fp32"])
    assert gpu_check.main() == 0
    assert flags_now() == before
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    flops = results["flops"]
    # Measured, not assumed: the input-only attack's backward skips the parameters' gradients.
    assert flops["attack_step_inputgrad"]["forward_equivalents"] == pytest.approx(2.0, abs=0.05)
    assert flops["attack_step_backward"]["forward_equivalents"] == pytest.approx(3.0, abs=0.05)
    assert flops["plain-backward"]["forward_equivalents"] == pytest.approx(27, abs=0.5)
    assert flops["plain-inputgrad"]["forward_equivalents"] == pytest.approx(20, abs=0.5)
    assert flops["iat"]["forward_equivalents"] == flops["plain-inputgrad"]["forward_equivalents"]
    speed = results["speed"]
    assert all(row["ms_per_step"] > 0 for row in speed.values())
    assert speed["plain-backward@8"]["flags"] == gpu_check.STOCK_FLAGS
    assert speed["plain-inputgrad-tf32-cudnn@8"]["flags"] == gpu_check.FAST_FLAGS
    assert speed["iat-fp32@8"]["flags"] == {"matmul_tf32": False, "cudnn_tf32": False, "cudnn_benchmark": False}
    profile = speed["iat-fp32@8"]["profile"]
    assert profile["by"] == "own CPU time" and len(profile["top"]) == 10
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| iat (build_update) |" in md and "Profile of iat-fp32@8" in md and "Sync check" not in md
