"""`--speed exact|fast`: one named setting. exact changes nothing; fast spells out the fastest measured options
for the device (iat.training.speed), and config.json records both the name and what it stood for."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import step_config

from iat.rundir import files
from iat.training import speed
from iat.training.loop import train


def test_exact_changes_nothing():
    cfg = step_config()
    assert speed.apply_speed(cfg, torch.device("cuda")) is cfg


def test_fast_on_cuda_is_the_fastest_measured_setting():
    fast = speed.apply_speed(step_config(speed="fast"), torch.device("cuda"))
    assert (fast.cuda_graphs, fast.compile, fast.tf32, fast.amp, fast.attack_precision, fast.cudnn_benchmark) == (
        True, True, True, True, "amp", True)


@pytest.mark.parametrize("bf16", [True, False])
def test_fast_on_a_cpu_uses_bf16_only_where_the_cpu_has_it(monkeypatch, bf16):
    monkeypatch.setattr(speed, "native_bf16", lambda: bf16)
    fast = speed.apply_speed(step_config(speed="fast"), torch.device("cpu"))
    assert (fast.amp, fast.attack_precision) == ((True, "amp") if bf16 else (False, "fp32"))
    assert not fast.cuda_graphs and not fast.compile  # nothing to capture on a CPU; compiling needs a compiler


def test_config_json_records_the_speed_and_the_options_it_stood_for(tmp_path, monkeypatch):
    monkeypatch.setattr(speed, "native_bf16", lambda: True)
    out = train(step_config(speed="fast"), tmp_path / "run", progress=False)
    config = json.loads((out / files.CONFIG).read_text())
    assert config["speed"] == "fast" and config["amp"] is True and config["attack_precision"] == "amp"
