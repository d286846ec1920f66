"""benchmarks/gpu_check.py, the one script a lent GPU runs: its control flow, on the CPU.

A device lease is minutes long and cannot be retried at will, so the script must not break on
anything the CPU can check: it parses, runs every section in order, keeps going when a section
fails, and writes its tables after each section. The GPU work itself is stubbed here.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture
def gpu_check(monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(module, "environment", lambda: {"gpu": "stub"})
    monkeypatch.setattr(module, "build_update", lambda cfg, device: lambda x, y: None)
    monkeypatch.setattr(module, "time_steps", lambda step, batch, warmup, timed: {
        "ms_per_step": 10.0, "images_per_s": batch * 100, "cifar_epoch_s": 5.0})
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
    assert results["cuda_tests"]["returncode"] == 0 and "pgd/graphs" in results["real_runs"]
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| iat-graphs-compile-tf32-amp-attack-cudnn | 64 | 10.0 |" in md and "| pgd/graphs |" in md


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
        True, True, "on", True, "amp", "on")
    cfg.validate()  # iat train accepts what the script times


def test_any_batch_size_is_timed_and_a_failed_section_still_makes_tables(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["gpu_check.py", "--out", str(tmp_path), "--skip", "tests,runs,sync,compile",
                                     "--batches", "128", "--variants", "iat-graphs-tf32-amp"])
    assert gpu_check.main() == 0
    assert set(json.loads((tmp_path / "gpu_check.json").read_text())["speed"]) == {"iat-graphs-tf32-amp@128"}
    md = gpu_check.tables({"speed": {"error": "RuntimeError: boom", "traceback": "..."}, "real_runs": {}})
    assert "boom" in md
