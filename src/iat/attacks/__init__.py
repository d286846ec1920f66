"""Attacks on images in [0,1]: `PGD(model, eps=8/255, alpha=2/255, steps=7)(x, y)`.

`make_attack("pgd20", model, eps, step_size)` builds one from the names used on the command line:
`clean`, `fgsm`, `pgdN` for N steps, and `autoattack` (standard AutoAttack; the optional extra).
"""

from __future__ import annotations

import re

from torch import nn

from iat.attacks.autoattack import AutoAttack, autoattack_available, require_autoattack
from iat.attacks.base import BN_MODES, Attack, ce_loss
from iat.attacks.fgsm import FGSM
from iat.attacks.losses import LOSSES, dlr_loss, get_loss, margin_loss
from iat.attacks.pgd import PGD
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
    raise UsageError(f"unknown attack {name!r}; use clean, fgsm, pgdN for N steps (pgd7, pgd20, pgd1000), "
                     "or autoattack")


def make_attack(name: str, model: nn.Module, eps: float, step_size: float, seed: int = 0) -> Attack | None:
    """The attack called `name` (None for 'clean'); `seed` is AutoAttack's (the others use torch's RNG)."""
    kind, steps = parse_attack_name(name)
    if kind == "clean":
        return None
    if kind == "autoattack":
        return AutoAttack(model, eps=eps, seed=seed)
    if kind == "fgsm":
        return FGSM(model, eps=eps)
    return PGD(model, eps=eps, alpha=step_size, steps=steps)


__all__ = ["Attack", "AutoAttack", "BN_MODES", "FGSM", "LOSSES", "PGD", "autoattack_available", "ce_loss",
           "dlr_loss", "get_loss", "make_attack", "margin_loss", "parse_attack_name", "require_autoattack"]
