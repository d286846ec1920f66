"""Attacks on images in [0,1]: `PGD(model, eps=8/255, step_size=2/255, steps=7)(x, y)`.

`make_attack("pgd20", model, AttackBudget(8/255, 2/255))` builds one from the names used on the
command line: `clean`, `fgsm`, `pgdN` for N steps, and `autoattack` (standard AutoAttack; the
optional extra). Every attack is a loop over the pieces of `iat.attacks.core`. Training's inner
attack (`--attack pgd|fgsm-rs|n-fgsm`) is `training_attack`; FGSMRS and NFGSM are its single-step ones.
"""

from __future__ import annotations

import re

from torch import nn

from iat.attacks.autoattack import AutoAttack, autoattack_available, require_autoattack
from iat.attacks.budget import STEP_RULE, AttackBudget, default_step
from iat.attacks.core import BN_MODES, Attack, ce_loss, frozen
from iat.attacks.fgsm import FGSM
from iat.attacks.fgsm_rs import FGSMRS
from iat.attacks.losses import dlr_loss, margin_loss
from iat.attacks.nfgsm import NFGSM
from iat.attacks.pgd import PGD
from iat.attacks.trades import TRADESPGD, NoiseStartPGD, kl_loss
from iat.attacks.training import SINGLE_STEP, TRAINING_ATTACKS, training_attack
from iat.errors import UsageError

MAX_PGD_STEPS = 100_000


def parse_attack_name(name: str) -> tuple[str, int]:
    """'clean' -> ('clean', 0); 'fgsm' -> ('fgsm', 1); 'pgd20' -> ('pgd', 20); 'autoattack' -> ('autoattack', 0)."""
    name = name.strip().lower()
    if name in ("clean", "fgsm"):
        return name, 0 if name == "clean" else 1
    if name == "autoattack":
        return name, 0
    m = re.fullmatch(r"pgd(\d+)", name)
    if m and 1 <= int(m.group(1)) <= MAX_PGD_STEPS:
        return "pgd", int(m.group(1))
    if m:
        raise UsageError(f"attack {name!r}: PGD takes 1 to {MAX_PGD_STEPS:,} steps, e.g. pgd7, pgd20, pgd1000")
    raise UsageError(f"unknown attack {name!r}; use clean, fgsm, pgdN for N steps (pgd7, pgd20, pgd1000), "
                     "or autoattack")


def make_attack(name: str, model: nn.Module, budget: AttackBudget, seed: int = 0) -> Attack | None:
    """The attack called `name` (None for 'clean') within `budget`, whose steps the name overrides;
    `seed` is AutoAttack's (the others use torch's RNG)."""
    kind, steps = parse_attack_name(name)
    if kind == "clean":
        return None
    if kind == "autoattack":
        return AutoAttack(model, eps=budget.eps, seed=seed)
    if kind == "fgsm":
        return FGSM(model, eps=budget.eps)
    return PGD(model, budget.eps, budget.step_size, steps)


__all__ = ["SINGLE_STEP", "STEP_RULE", "TRAINING_ATTACKS", "Attack", "AttackBudget", "AutoAttack", "BN_MODES", "FGSM",
           "FGSMRS", "NFGSM", "PGD", "TRADESPGD", "NoiseStartPGD", "autoattack_available", "ce_loss", "default_step",
           "dlr_loss", "frozen", "kl_loss", "make_attack", "margin_loss", "parse_attack_name", "require_autoattack",
           "training_attack"]
