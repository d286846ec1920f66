"""Standard AutoAttack (Croce & Hein 2020, https://arxiv.org/abs/2003.01690), L-inf, by its authors' code.

The ensemble APGD-CE, APGD-T (9 target classes), FAB-T (9 target classes) and Square (5000
queries), each run only on the examples the previous ones did not fool, all hyperparameters
fixed. It comes from the `pyautoattack` package, the optional extra: `pip install 'iat[autoattack]'`.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

from iat.attacks.core import Attack
from iat.errors import UsageError

PACKAGE = "pyautoattack"
COMPONENTS = ("apgd-ce", "apgd-t", "fab-t", "square")  # the 'standard' version, in the order run


def autoattack_available() -> bool:
    return importlib.util.find_spec(PACKAGE) is not None


def require_autoattack() -> None:
    """Raise a UsageError that says how to install AutoAttack when it is missing."""
    if not autoattack_available():
        raise UsageError(f"the autoattack attack needs the optional extra: pip install 'iat[autoattack]' "
                         f"(the {PACKAGE} package, AutoAttack by its authors), then run the command again")


class AutoAttack(Attack):
    """Standard L-inf AutoAttack: APGD-CE, APGD-T, FAB-T, Square; the worst case over the four.

    Args: model (images in [0,1] -> logits), eps (radius, e.g. 8/255), seed (recorded, passed to every
    component; AutoAttack's own fallback is the clock). Parameters get no gradient.
    Usage: `x_adv = AutoAttack(model, eps=8/255, seed=0)(x, y)`.
    """

    def __init__(self, model: nn.Module, eps: float, seed: int = 0):
        require_autoattack()
        super().__init__(model, eps)
        self.seed = int(seed)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from pyautoattack import AutoAttack as _AutoAttack  # the optional extra: imported only when run

        x, y = x.detach(), y.detach()
        if len(x) == 0:
            return x
        with self.attacking(x):  # the parameters frozen: AutoAttack calls backward() and gives them no gradient
            aa = _AutoAttack(self.model, eps=self.eps, norm="Linf", version="standard", seed=self.seed,
                             device=x.device)
            x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=len(x))
        self_check(x, x_adv, self.eps)
        return x_adv.detach()

    def describe(self) -> dict:
        return {**super().describe(), "version": "standard", "components": list(COMPONENTS), "seed": self.seed}


def self_check(x: torch.Tensor, x_adv: torch.Tensor, eps: float) -> None:
    """Refuse adversarial examples outside the eps-ball or [0,1], or with NaNs (AutoAttack's final check)."""
    nans = int(torch.isnan(x_adv).sum().item())
    dist = (x_adv - x).abs().flatten(1).amax(1).max().item() if len(x) else 0.0
    lo, hi = (x_adv.min().item(), x_adv.max().item()) if len(x) else (0.0, 1.0)
    if nans or dist > eps + 1e-5 or lo < 0 or hi > 1:
        raise RuntimeError(f"AutoAttack returned invalid examples: max L-inf perturbation {dist:.6f} (eps {eps:.6f}), "
                           f"{nans} NaNs, range [{lo:.4g}, {hi:.4g}]")
