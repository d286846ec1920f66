"""The inner attack of adversarial training (`--attack`): the paper's PGD, or a single-step one.

`pgd` is PGD with `--step-size` and `--attack-steps` (the paper's PGD-7). `fgsm-rs` and `n-fgsm` are
one forward-backward each (FGSMRS, NFGSM) and take their step from eps, as their papers do (1.25 eps
and eps): `--step-size` and `--attack-steps` describe PGD and do not apply to them.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from iat.attacks.base import Attack
from iat.attacks.fgsm_rs import FGSMRS
from iat.attacks.nfgsm import NFGSM
from iat.attacks.pgd import PGD
from iat.errors import UsageError

TRAINING_ATTACKS = ("pgd", "fgsm-rs", "n-fgsm")
SINGLE_STEP = ("fgsm-rs", "n-fgsm")


def training_attack(cfg: Any, model: nn.Module, *, adversarial: bool) -> Attack | None:
    """The attack `cfg` (a TrainConfig: attack, eps, step_size, attack_steps, attack_bn) trains against,
    or None for a method that is not `adversarial`.

    A non-default `--attack` or `--co-guard` for such a method is refused with a one-line UsageError:
    the user asked for something the run would silently not do.
    """
    if not adversarial:
        for name, value, default in (("attack", cfg.attack, "pgd"), ("co-guard", cfg.co_guard, "auto")):
            if value != default:
                raise UsageError(f"--{name} {value} applies only to adversarial methods (pgd, iat-*); "
                                 f"--method {cfg.method} trains without an attack: drop --{name}")
        return None
    if cfg.attack == "fgsm-rs":
        return FGSMRS(model, cfg.eps, bn_mode=cfg.attack_bn)
    if cfg.attack == "n-fgsm":
        return NFGSM(model, cfg.eps, bn_mode=cfg.attack_bn)
    if cfg.attack == "pgd":
        return PGD(model, cfg.eps, cfg.step_size, cfg.attack_steps, bn_mode=cfg.attack_bn)
    raise UsageError(f"--attack {cfg.attack!r}: choose one of {', '.join(TRAINING_ATTACKS)}")
