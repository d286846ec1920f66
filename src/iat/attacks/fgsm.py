"""FGSM (Goodfellow et al. 2015, https://arxiv.org/abs/1412.6572), L-inf."""

from __future__ import annotations

import torch

from iat.attacks.core import Attack, input_grad, signed_step


class FGSM(Attack):
    """One signed-gradient step of size eps from the clean point: x + eps * sign(grad), clipped to [0,1].

    Args: model (images in [0,1] -> logits), eps (float in [0,1], e.g. 8/255), bn_mode ('eval').
    Usage: `x_adv = FGSM(model, eps=8/255)(x, y)`.
    """

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = x.detach(), y.detach()
        with self.attacking(x):
            return signed_step(x, input_grad(self.model, self.loss_fn, x, y), self.eps, x, self.eps)
