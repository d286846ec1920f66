"""Interpolation: Mixup (Zhang et al. 2018) and Manifold Mixup (Verma et al. 2019).

`mixed_loss(model, mix, x, y)` is the paper's Loss(f, Mix, x, y): it draws lambda ~ Beta(alpha, alpha)
and a partner permutation j, runs the network with the mix applied at the chosen layer, and returns
lambda * CE(f(x~), y_i) + (1 - lambda) * CE(f(x~), y_j).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LAMBDA_MODES = ("batch", "example")


@dataclass
class MixDraw:
    """One draw of the mixing randomness for a batch; called on hidden states at `layer`."""

    layer: int
    lam: torch.Tensor  # shape () for one lambda per batch, (N,) for one per example
    perm: torch.Tensor  # (N,) partner index j for each example i

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        lam = self.lam.view(-1, *([1] * (h.dim() - 1))) if self.lam.dim() else self.lam
        return lam * h + (1 - lam) * h[self.perm]


class NoMix:
    """The identity Mix: ERM and plain PGD training."""

    name = "none"

    def draw(self, n: int, device: torch.device) -> MixDraw | None:
        return None

    def __repr__(self) -> str:
        return "NoMix()"


class Mixup:
    """Input-space mixup. alpha=1.0 as in Zhang et al.; `lam_per` is 'batch' (default) or 'example'."""

    name = "mixup"

    def __init__(self, alpha: float = 1.0, lam_per: str = "batch", layers: tuple[int, ...] = (0,)):
        if alpha <= 0:
            raise ValueError(f"mixing alpha must be > 0, got {alpha}")
        if lam_per not in LAMBDA_MODES:
            raise ValueError(f"lam_per must be one of {LAMBDA_MODES}, got {lam_per!r}")
        self.alpha, self.lam_per, self.layers = alpha, lam_per, tuple(layers)
        self._alpha: dict[torch.device, torch.Tensor] = {}  # alpha on each device, made once: no copy per draw

    def draw(self, n: int, device: torch.device) -> MixDraw:
        # Drawn on `device` (no host-device copy, nothing to sync; on the CPU the same draws as before).
        # The layer is a Python int drawn from the CPU generator: it picks the code path.
        alpha = self._alpha_on(device)
        beta = torch.distributions.Beta(alpha, alpha, validate_args=False)  # alpha > 0 checked in __init__;
        lam = beta.sample((n,) if self.lam_per == "example" else ())  # validating would read it back
        layer = self.draw_layer()
        perm = torch.randperm(n, device=device)
        return MixDraw(layer=layer, lam=lam, perm=perm)

    def _alpha_on(self, device: torch.device) -> torch.Tensor:
        # made once per device: a host-to-device copy inside a captured CUDA graph is not allowed
        if device not in self._alpha:
            self._alpha[device] = torch.tensor(self.alpha, device=device)
        return self._alpha[device]

    def draw_layer(self) -> int:
        """A layer to mix at, drawn uniformly with the CPU generator."""
        return self.layers[int(torch.randint(len(self.layers), ()))]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alpha={self.alpha}, lam_per={self.lam_per!r}, layers={self.layers})"


class ManifoldMixup(Mixup):
    """Mixup at a layer drawn uniformly from input / after block 1 / after block 2; alpha=2.0."""

    name = "manifold-mixup"

    def __init__(self, alpha: float = 2.0, lam_per: str = "batch", layers: tuple[int, ...] = (0, 1, 2)):
        super().__init__(alpha=alpha, lam_per=lam_per, layers=layers)


def mixed_cross_entropy(logits: torch.Tensor, y: torch.Tensor, draw: MixDraw | None) -> torch.Tensor:
    """lambda * CE(y_i) + (1 - lambda) * CE(y_j), averaged over the batch."""
    if draw is None:
        return F.cross_entropy(logits, y)
    ce_i = F.cross_entropy(logits, y, reduction="none")
    ce_j = F.cross_entropy(logits, y[draw.perm], reduction="none")
    return (draw.lam * ce_i + (1 - draw.lam) * ce_j).mean()


def mixed_loss(model: nn.Module, mix: NoMix | Mixup, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The paper's Loss(f_theta, Mix, x, y): run the network with Mix applied, return the mixed CE."""
    draw = mix.draw(len(x), x.device)
    logits = model(x, mix=draw) if draw is not None else model(x)
    return mixed_cross_entropy(logits, y, draw)
