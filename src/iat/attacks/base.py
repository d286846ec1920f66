"""What every attack object shares: input checks, the model left exactly as found, and a readable repr."""

from __future__ import annotations

import torch
from torch import nn

from iat.attacks.core import BN_MODES, LossFn, ce_loss, frozen, input_grad, project
from iat.units import parse_eps


class Attack:
    """Base class: `attack(x, y)` returns adversarial images in [0,1], detached.

    bn_mode: 'eval' (default) runs the model in eval mode while attacking; 'train' runs it in train
    mode (BatchNorm uses batch statistics) but restores the running statistics afterwards, so an
    attack never changes the model. Either way the model's own mode is restored on exit, and the
    gradient is taken with respect to the input only: no parameter's `.grad` is touched (see `frozen`).
    """

    def __init__(self, model: nn.Module, eps: float, bn_mode: str = "eval", loss_fn: LossFn = ce_loss):
        if bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
        self.model, self.eps, self.bn_mode, self.loss_fn = model, parse_eps(eps, "eps"), bn_mode, loss_fn

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def input_grad(self, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """d loss / d x at x_adv; parameters get no gradient."""
        return input_grad(self.model, self.loss_fn, x_adv, y)

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Back into the eps-ball around x, then into [0,1]."""
        return project(x_adv, x, self.eps)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError(
                f"attack inputs must be images in [0,1] (normalization lives inside the model); "
                f"got range [{x.min().item():.3g}, {x.max().item():.3g}]"
            )
        with frozen(self.model, self.bn_mode), torch.enable_grad():
            x_adv = self.perturb(x.detach(), y.detach())
        return x_adv.detach()

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
        return f"{type(self).__name__}({fields})"

    def describe(self) -> dict:
        return {"eps": round(self.eps, 6), "bn_mode": self.bn_mode}
