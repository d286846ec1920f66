"""The Python API of the README and docs/interfaces.md: `iat.train(iat.TrainConfig(...), out)` is `iat train`."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
import torch

import iat
from iat.cli import main
from iat.errors import UsageError

OPTIONS = dict(method="iat-mixup", dataset="digits", arch="cnn-small", width=4, epochs=2, train_size=128,
               eps=0.1, step_size=0.025, attack_steps=2, seed=3, device="cpu")


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_iat_train_writes_the_weights_iat_train_on_the_command_line_writes(tmp_path):
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in OPTIONS.items()]
    assert main(["train", *flags, "--out", str(tmp_path / "cli"), "-q"]) == 0

    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = not benchmark  # a script's own setting, which the run must not keep
    try:
        out = iat.train(iat.TrainConfig(**OPTIONS), tmp_path / "api", progress=False)
        assert torch.backends.cudnn.benchmark is (not benchmark)
    finally:
        torch.backends.cudnn.benchmark = benchmark

    assert out == tmp_path / "api"
    assert sha256(out / "model.safetensors") == sha256(tmp_path / "cli" / "model.safetensors")
    assert iat.train(iat.TrainConfig(**OPTIONS), out, resume=True, progress=False) == out  # finished: as is


def test_bad_input_is_a_usage_error_before_anything_is_written(tmp_path):
    with pytest.raises(UsageError, match="--epochs"):
        iat.train(iat.TrainConfig(**{**OPTIONS, "epochs": 0}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_import_iat_leaves_torch_unimported_until_asked():
    code = "import sys, iat; assert 'torch' not in sys.modules; iat.TrainConfig; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
