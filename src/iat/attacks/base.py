"""What every attack shares: input checks, and leaving the model exactly as it found it."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

BN_MODES = ("eval", "train")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy: the sign of its input gradient is what L-inf attacks follow."""
    return F.cross_entropy(logits, y, reduction="sum")


class Attack:
    """Base class: `attack(x, y)` returns adversarial images in [0,1], detached.

    bn_mode: 'eval' (default) runs the model in eval mode while attacking; 'train' runs it in train
    mode (BatchNorm uses batch statistics) but restores the running statistics afterwards, so an
    attack never changes the model. Either way the model's own mode is restored on exit, and the
    gradient is taken with respect to the input only: no parameter's `.grad` is touched.
    """

    def __init__(self, model: nn.Module, eps: float, bn_mode: str = "eval", loss_fn: LossFn = ce_loss):
        if not 0 <= eps <= 1:
            raise ValueError(f"eps must be in [0, 1] for images in [0,1], got {eps} (write 8/255, not 8)")
        if bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
        self.model, self.eps, self.bn_mode, self.loss_fn = model, float(eps), bn_mode, loss_fn

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def input_grad(self, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """d loss / d x at x_adv; parameters get no gradient."""
        x_adv = x_adv.detach().requires_grad_(True)
        loss = self.loss_fn(self.model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        return grad

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Back into the eps-ball around x, then into [0,1]."""
        return torch.min(torch.max(x_adv, x - self.eps), x + self.eps).clamp(0, 1).detach()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError(
                f"attack inputs must be images in [0,1] (normalization lives inside the model); "
                f"got range [{x.min().item():.3g}, {x.max().item():.3g}]"
            )
        was_training = self.model.training
        saved_buffers = None
        if self.bn_mode == "train":
            saved_buffers = [b.detach().clone() for b in self.model.buffers()]
        self.model.train(self.bn_mode == "train")
        try:
            with torch.enable_grad():
                x_adv = self.perturb(x.detach(), y.detach())
        finally:
            self.model.train(was_training)
            if saved_buffers is not None:
                with torch.no_grad():
                    for b, saved in zip(self.model.buffers(), saved_buffers):
                        b.copy_(saved)
        return x_adv.detach()

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
        return f"{type(self).__name__}({fields})"

    def describe(self) -> dict:
        return {"eps": round(self.eps, 6), "bn_mode": self.bn_mode}
