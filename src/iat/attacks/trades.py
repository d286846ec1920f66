"""The inner attacks of TRADES and MART: PGD from a tiny Gaussian start, on KL or on cross-entropy.

TRADES (Zhang et al. 2019, https://arxiv.org/abs/1901.08573) climbs KL(f(x) || f(x')) from
x + 0.001 * N(0, 1); MART (Wang et al. 2020, https://openreview.net/forum?id=rklOg6EFwS) climbs
cross-entropy from the same start. Both as their reference code does (yaodongyu/TRADES `trades.py`,
YisenWang/MART `mart.py`): the start is neither projected nor clamped, every step is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from iat.attacks.pgd import PGD

START_NOISE = 0.001  # std of the Gaussian start, the references' 0.001 * randn


def kl_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Summed KL(target || softmax(logits)); `target` is the clean prediction, probabilities (N, C)."""
    return F.kl_div(F.log_softmax(logits, dim=1), target, reduction="sum")


class NoiseStartPGD(PGD):
    """PGD from x + 0.001 * N(0, 1) (MART's inner attack with the default cross-entropy).

    Args as PGD (random_start does not apply: the start is always the Gaussian one).
    Usage: `x_adv = NoiseStartPGD(model, eps=8/255, step_size=2/255, steps=10)(x, y)`.
    """

    def start(self, x: torch.Tensor) -> torch.Tensor:
        return (x + START_NOISE * torch.randn_like(x)).detach()

    def describe(self) -> dict:
        described = {**super().describe(), "start_noise": START_NOISE}
        described.pop("random_start")
        return described


class TRADESPGD(NoiseStartPGD):
    """TRADES's inner attack: PGD on KL(f(x) || f(x')) from x + 0.001 * N(0, 1); the labels are unused.

    The target f(x) is computed once, in the attack's BatchNorm mode, and held fixed while x' moves.
    Usage: `x_adv = TRADESPGD(model, eps=8/255, step_size=2/255, steps=10)(x, y)`.
    """

    def __init__(self, model, eps: float, step_size: float, steps: int, **kwargs):
        super().__init__(model, eps, step_size, steps, loss_fn=kl_loss, **kwargs)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self.attacking(x), torch.no_grad():
            target = F.softmax(self.model(x.detach()), dim=1)  # (N, C)
        return super().__call__(x, target)  # loss_fn(logits, target): the "labels" are f(x)
