"""The training update of a config, alone: for benchmarks and GPU checks that time steps without a run.

`build_update(cfg, device)` returns `update(x, y)`: one step of `cfg`'s method on a freshly built model,
exactly as `iat.training.train` runs it (same objective, precision, channels_last, compile, CUDA graphs),
without data loading, checkpoints or a run directory.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from iat.config import TrainConfig
from iat.training.state import RunState
from iat.training.step import make_objective, make_update


def build_update(cfg: TrainConfig, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """`update(x, y) -> loss`: one training step of `cfg` on `device` (images in [0,1], labels int64, on
    `device`); the loss stays on the device (reading it syncs)."""
    cfg.validate()
    state = RunState.create(cfg, device)
    objective = make_objective(cfg, state.model)
    update, _ = make_update(cfg, state, objective, device=device)
    state.start_epoch()
    return update
