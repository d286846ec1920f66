"""FGSM (Goodfellow et al. 2015, https://arxiv.org/abs/1412.6572), L-inf."""

from __future__ import annotations

import torch

from iat.attacks.base import Attack


class FGSM(Attack):
    """One signed-gradient step of size eps: x + eps * sign(grad), clipped to [0,1].

    Args: model (images in [0,1] -> logits), eps (float in [0,1], e.g. 8/255), bn_mode ('eval').
    Usage: `x_adv = FGSM(model, eps=8/255)(x, y)`.
    """

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        grad = self.input_grad(x, y)
        return self.project(x + self.eps * grad.sign(), x)
