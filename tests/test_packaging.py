"""The torch floor in pyproject.toml is at least what the code uses: each API below names the release that
brought it; lowering the floor under one of them fails here (a user on that torch would get an AttributeError
in the middle of a run, not at install)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

USES = {  # API the code calls -> the torch release that has it
    "torch.compiler.set_stance (graphs.py: the last partial batch eager)": (2, 6),
    "torch._dynamo.config.recompile_limit (model_prep.py)": (2, 7),
    'torch.amp.GradScaler("cuda") (step.py: fp16)': (2, 3),
    "torch.autocast on the CPU in bf16 (precision.py)": (1, 10),
}


def floor(package: str) -> tuple[int, int]:
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    major, minor = re.search(rf'"{package}>=(\d+)\.(\d+)', text).groups()
    return int(major), int(minor)


def test_the_torch_floor_covers_every_api_the_code_uses():
    needed = max(USES.values())
    assert floor("torch") >= needed, f"pyproject says torch>={floor('torch')}, the code needs {needed}: {USES}"


def test_the_apis_exist_in_the_installed_torch():
    assert hasattr(torch.compiler, "set_stance") and hasattr(torch._dynamo.config, "recompile_limit")
    assert hasattr(torch.amp, "GradScaler")
