"""Layout and compilation of the trained model: channels_last and torch.compile, in place.

Both keep the state_dict's names and values, so checkpoints and weights are the same files.
channels_last is the default for convolutional models on every device (`--no-channels-last` turns it
off): the same arithmetic in another memory order, so results differ from the contiguous layout only
in rounding, and it is faster on CPUs (oneDNN) and GPUs (cuDNN) alike (benchmarks/README.md).
`--compile` uses `nn.Module.compile()`, which compiles the module's forward in place: the training
step and the training attack both call the same module, so both run compiled.
"""

from __future__ import annotations

import torch
from torch import nn


def is_convolutional(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def prepare_model(model: nn.Module, *, channels_last: bool, compile: bool) -> bool:
    """Put `model` in channels_last (where it applies) and compile it as asked; return channels_last used."""
    used = channels_last and is_convolutional(model)
    if used:
        model.to(memory_format=torch.channels_last)  # in place: the optimizer keeps the same parameters
    if compile:
        model.compile()
    return used
