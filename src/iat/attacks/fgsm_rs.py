"""FGSM with a random start (Wong, Rice & Kolter 2020, "Fast is better than free",
https://arxiv.org/abs/2001.03994): the single-step attack of fast adversarial training."""

from __future__ import annotations

import torch
from torch import nn

from iat.attacks.core import Attack, LossFn, ce_loss, input_grad, signed_step, uniform_start

ALPHA_RATIO = 1.25  # the paper's step, 1.25 eps: larger steps (2 eps) overfit catastrophically (their Fig. 3)


class FGSMRS(Attack):
    """A uniform random start in the eps-ball, then one signed-gradient step of size `alpha`,
    projected back to the eps-ball and [0,1]: one forward-backward.

    Args: model (images in [0,1] -> logits), eps (radius), alpha (step; default 1.25 eps),
    bn_mode ('eval' or 'train'), loss_fn (default summed cross-entropy).
    Usage: `x_adv = FGSMRS(model, eps=8/255)(x, y)`; the result is within eps of x.
    """

    def __init__(self, model: nn.Module, eps: float, alpha: float | None = None, *, bn_mode: str = "eval",
                 loss_fn: LossFn = ce_loss, autocast: bool = False, check_range: bool = True):
        super().__init__(model, eps, bn_mode, loss_fn, autocast=autocast, check_range=check_range)
        self.alpha = ALPHA_RATIO * self.eps if alpha is None else float(alpha)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = x.detach(), y.detach()
        with self.attacking(x):
            x_adv = uniform_start(x, self.eps)
            return signed_step(x_adv, input_grad(self.model, self.loss_fn, x_adv, y), self.alpha, x, self.eps)

    def describe(self) -> dict:
        return {**super().describe(), "alpha": round(self.alpha, 6)}
