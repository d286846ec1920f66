"""L-inf PGD (Madry et al. 2018, https://arxiv.org/abs/1706.06083)."""

from __future__ import annotations

import torch
from torch import nn

from iat.attacks.core import Attack, LossFn, ce_loss, input_grad, signed_step, uniform_start
from iat.units import parse_eps


class PGD(Attack):
    """Projected gradient ascent on the loss inside the L-inf ball of radius eps.

    Args: model (images in [0,1] -> logits), eps (radius, e.g. 8/255), step_size (e.g. 2/255),
    steps (iterations, 1..1000+), random_start (uniform start in the ball; default True),
    bn_mode ('eval' or 'train'), loss_fn (default summed cross-entropy), autocast and check_range (see Attack).
    Usage: `x_adv = PGD(model, eps=8/255, step_size=2/255, steps=7)(x, y)`.

    The loop is `start`, then `steps` times `step`: a single-step attack with another start or
    another step (FGSM with a random start, N-FGSM) overrides one of the two.
    """

    def __init__(self, model: nn.Module, eps: float, step_size: float, steps: int, *, random_start: bool = True,
                 bn_mode: str = "eval", loss_fn: LossFn = ce_loss, autocast: bool = False, check_range: bool = True):
        super().__init__(model, eps, bn_mode, loss_fn, autocast=autocast, check_range=check_range)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.step_size = parse_eps(step_size, "step size", allow_zero=False)
        self.steps, self.random_start = int(steps), random_start

    def start(self, x: torch.Tensor) -> torch.Tensor:
        """The first point: uniform in the ball, or x itself."""
        return uniform_start(x, self.eps) if self.random_start else x.clone()

    def step(self, x_adv: torch.Tensor, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return signed_step(x_adv, grad, self.step_size, x, self.eps)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = x.detach(), y.detach()
        with self.attacking(x):
            x_adv = self.start(x)
            for _ in range(self.steps):
                x_adv = self.step(x_adv, x, input_grad(self.model, self.loss_fn, x_adv, y))
        return x_adv.detach()

    def describe(self) -> dict:
        return {**super().describe(), "step_size": round(self.step_size, 6), "steps": self.steps,
                "random_start": self.random_start}
