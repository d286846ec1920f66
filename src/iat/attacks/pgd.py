"""L-inf PGD (Madry et al. 2018, https://arxiv.org/abs/1706.06083)."""

from __future__ import annotations

import torch

from iat.attacks.base import Attack, LossFn, ce_loss


class PGD(Attack):
    """Projected gradient ascent on the loss inside the L-inf ball of radius eps.

    Args: model (images in [0,1] -> logits), eps (radius, e.g. 8/255), alpha (step size, e.g. 2/255),
    steps (iterations, 1..1000+), random_start (uniform start in the ball; default True),
    bn_mode ('eval' or 'train'), loss_fn (default summed cross-entropy).
    Usage: `x_adv = PGD(model, eps=8/255, alpha=2/255, steps=7)(x, y)`.
    """

    def __init__(
        self,
        model,
        eps: float,
        alpha: float,
        steps: int,
        random_start: bool = True,
        bn_mode: str = "eval",
        loss_fn: LossFn = ce_loss,
    ):
        super().__init__(model, eps, bn_mode, loss_fn)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha (step size) must be in (0, 1], got {alpha}")
        self.alpha, self.steps, self.random_start = float(alpha), int(steps), random_start

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv = x.clone()
        if self.random_start:
            x_adv = self.project(x + torch.empty_like(x).uniform_(-self.eps, self.eps), x)
        for _ in range(self.steps):
            grad = self.input_grad(x_adv, y)
            x_adv = self.project(x_adv + self.alpha * grad.sign(), x)
        return x_adv

    def describe(self) -> dict:
        return {**super().describe(), "alpha": round(self.alpha, 6), "steps": self.steps,
                "random_start": self.random_start}
