"""channels_last on a CPU only where it is safe and measured faster (iat.cpu_kernels), and the run that
crashed oneDNN's AVX2 kernels now trains under them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from iat import cpu_kernels
from iat.models import create_model
from iat.training.model_prep import prepare_model


@pytest.mark.parametrize("level, onednn_cap, helps", [
    ("AVX512", None, True),
    ("AVX512", "AVX2", False),  # oneDNN capped below AVX-512: its AVX2 kernels run the convolutions
    ("AVX512", "AVX512_CORE_AMX", True),
    ("AVX2", None, False),
    ("DEFAULT", None, False),
    ("NEON", None, False),  # ARM: not measured, so the contiguous layout
])
def test_channels_last_on_a_cpu_only_with_avx512_kernels(monkeypatch, level, onednn_cap, helps):
    monkeypatch.setattr(cpu_kernels.torch.backends.cpu, "get_cpu_capability", lambda: level)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if onednn_cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", onednn_cap)
    assert cpu_kernels.channels_last_helps(torch.device("cpu")) is helps
    assert cpu_kernels.channels_last_helps(torch.device("cuda"))  # cuDNN: always
    model = create_model("preactresnet18", in_channels=1, num_classes=10, width=4)
    used = prepare_model(model, channels_last=True, compile=False, device=torch.device("cpu"))
    shortcut = next(m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2))
    assert used is helps and shortcut.is_contiguous(memory_format=torch.channels_last) is helps


def test_kernel_level_names_this_machine():
    assert cpu_kernels.kernel_level()  # AVX512, AVX2, DEFAULT, NEON, ...
    assert cpu_kernels.cpu_model()


@pytest.mark.slow
def test_the_run_that_crashed_avx2_kernels_trains_under_them(tmp_path):
    """Issue 19's reproduction: PreActResNet18 at width 4 (1x1 stride-2 shortcuts with 4 input channels) with the
    default options, one thread, oneDNN capped at AVX2. Before the rule it died with SIGSEGV or a glibc abort."""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "iat", "-q", "train", "--method", "erm", "--dataset", "digits", "--arch",
           "preactresnet18", "--width", "4", "--epochs", "1", "--train-size", "128", "--batch-size", "64",
           "--device", "cpu", "--out", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "config.json").read_text())["channels_last_used"] is False
