"""What every model here shares: normalization inside the network and mixing at named layers.

A network is a list of stages followed by a linear head. Manifold Mixup mixes the hidden state
*before* stage k: k=0 is the input, k=1 the output of the first block, k=2 the output of the second.
The output of the last stage is the penultimate representation (used by the random-label probe).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn


class Mixer(Protocol):
    """Mixes a batch of hidden states in place of layer `layer` (see iat.mixing)."""

    layer: int

    def __call__(self, h: torch.Tensor) -> torch.Tensor: ...


class Normalize(nn.Module):
    """Per-channel standardization, so that attacks see images in [0,1]."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class MixableNet(nn.Module):
    """stages[0] ... stages[-1] -> flatten -> head; mixing allowed before stages[0..mix_layers-1]."""

    #: layers at which Manifold Mixup may mix: 0 = input, 1 = after block 1, 2 = after block 2
    mix_layers: tuple[int, ...] = (0, 1, 2)

    def __init__(self, normalize: Normalize, stages: list[nn.Module], head: nn.Linear):
        super().__init__()
        self.normalize = normalize
        self.stages = nn.ModuleList(stages)
        self.head = head

    def features(self, x: torch.Tensor, mix: Mixer | None = None) -> torch.Tensor:
        """Penultimate representation, (N, C, H, W) images in [0,1] -> (N, D)."""
        h = x
        for k, stage in enumerate(self.stages):
            if mix is not None and mix.layer == k:
                h = mix(h)
            if k == 0:
                h = self.normalize(h)  # affine, so mixing before or after it is the same
            h = stage(h)
        return torch.flatten(h, 1)

    def forward(self, x: torch.Tensor, mix: Mixer | None = None) -> torch.Tensor:
        if mix is not None and mix.layer not in self.mix_layers:
            raise ValueError(f"cannot mix at layer {mix.layer}; valid layers: {self.mix_layers}")
        return self.head(self.features(x, mix))


ModelFactory = Callable[..., MixableNet]
