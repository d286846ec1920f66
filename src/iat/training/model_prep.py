"""Layout and compilation of the trained model: channels_last and torch.compile, in place.

Both keep the state_dict's names and values, so checkpoints and weights are the same files.
channels_last is the default for convolutional models where it is safe and measured faster: CUDA GPUs
and CPUs with AVX-512 kernels (the rule and its measurements: iat.cpu_kernels); `--no-channels-last`
turns it off everywhere. It is the same arithmetic in another memory order, so results differ from the
contiguous layout only in rounding.
`--compile` uses `nn.Module.compile()`, which compiles the module's forward in place: the training
step and the training attack both call the same module, so both run compiled.
"""

from __future__ import annotations

import torch
from torch import nn

from iat.cpu_kernels import channels_last_helps

RECOMPILE_LIMIT = 64  # compiled variants of the model's forward per run (see prepare_model)


def is_convolutional(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def prepare_model(model: nn.Module, *, channels_last: bool, compile: bool, device: torch.device) -> bool:
    """Put `model` in channels_last (asked, and where it applies on `device`) and compile it as asked;
    return whether channels_last is used."""
    used = channels_last and is_convolutional(model) and channels_last_helps(device)
    if used:
        model.to(memory_format=torch.channels_last)  # in place: the optimizer keeps the same parameters
    if compile:
        # Each Manifold Mixup layer x train/eval mode (the attack, the guard) x requires_grad state x batch shape
        # is its own compiled variant: more than dynamo's default 8, past which it would silently run eagerly.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        model.compile()
    return used
