"""N-FGSM (de Jorge et al. 2022, "Make some noise: reliable and efficient single-step adversarial
training", https://arxiv.org/abs/2202.01181): stronger noise, a plain step, and no projection."""

from __future__ import annotations

import torch
from torch import nn

from iat.attacks.core import Attack, LossFn, ce_loss, input_grad, signed_step, uniform_start

NOISE_RATIO = 2.0  # k: noise uniform in [-k eps, k eps], the paper's default
STEP_RATIO = 1.0  # the step, eps


class NFGSM(Attack):
    """Noise uniform in [-2 eps, 2 eps], then one signed-gradient step of size eps, clipped only to
    [0,1]: the noise is not projected back to the eps-ball, so the result lies within 3 eps of x.
    That larger effective radius, not a clipped step, is what avoids catastrophic overfitting.

    Args: model (images in [0,1] -> logits), eps (radius), noise (default 2 eps), alpha (step; default
    eps), bn_mode ('eval' or 'train'), loss_fn (default summed cross-entropy).
    Usage: `x_adv = NFGSM(model, eps=8/255)(x, y)`; one forward-backward.
    """

    def __init__(self, model: nn.Module, eps: float, noise: float | None = None, alpha: float | None = None, *,
                 bn_mode: str = "eval", loss_fn: LossFn = ce_loss, autocast: bool = False, check_range: bool = True):
        super().__init__(model, eps, bn_mode, loss_fn, autocast=autocast, check_range=check_range)
        self.noise = NOISE_RATIO * self.eps if noise is None else float(noise)
        self.alpha = STEP_RATIO * self.eps if alpha is None else float(alpha)

    @property
    def radius(self) -> float:
        """How far from x the result can be: noise + step."""
        return self.noise + self.alpha

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # The start and the step are the core's, with balls (of radius noise, then noise + step) that
        # the unprojected points never leave: so the only projection that acts is the clip to [0,1].
        x, y = x.detach(), y.detach()
        with self.attacking(x):
            x_adv = uniform_start(x, self.noise)
            return signed_step(x_adv, input_grad(self.model, self.loss_fn, x_adv, y), self.alpha, x, self.radius)

    def describe(self) -> dict:
        return {**super().describe(), "noise": round(self.noise, 6), "alpha": round(self.alpha, 6)}
