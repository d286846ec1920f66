"""Layout and compilation of the trained model: channels_last and torch.compile, in place.

Both keep the state_dict's names and values, so checkpoints and weights are the same files.
channels_last is the default for convolutional models on CUDA; on the CPU it is opt-in
(`--channels-last`), as its kernels round differently and the CPU's default path is pinned bit for bit.
`--compile` uses `nn.Module.compile()`, which compiles the module's forward in place: the training
step and the training attack both call the same module, so both run compiled.
"""

from __future__ import annotations

import torch
from torch import nn


def is_convolutional(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def uses_channels_last(model: nn.Module, device: torch.device, asked: bool) -> bool:
    return is_convolutional(model) and (device.type == "cuda" or asked)


def prepare_model(model: nn.Module, device: torch.device, *, channels_last: bool, compile: bool) -> bool:
    """Put `model` in channels_last (where it applies) and compile it as asked; return channels_last used."""
    used = uses_channels_last(model, device, channels_last)
    if used:
        model.to(memory_format=torch.channels_last)  # in place: the optimizer keeps the same parameters
    if compile:
        model.compile()
    return used
