"""The six training methods of the paper's tables, each a loss on one batch.

Every method is `method(model, x, y) -> (loss, metrics)`. The adversarial ones are Algorithm 1:
`interpolated_adversarial_loss` below, with Mix = identity for plain PGD training.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from iat.attacks import Attack
from iat.errors import UsageError
from iat.mixing import ManifoldMixup, Mixup, NoMix, mixed_loss


def interpolated_adversarial_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, mix, attack: Attack):
    """Algorithm 1 of the paper, one update's loss."""
    loss_clean = mixed_loss(model, mix, x, y)  # L_c = Loss(f, Mix, x_i, y_i)
    x_adv = attack(x, y)  # x~_i = attack(x_i, y_i)
    loss_adv = mixed_loss(model, mix, x_adv, y)  # L_a = Loss(f, Mix, x~_i, y_i)
    loss = (loss_clean + loss_adv) / 2  # L = (L_c + L_a) / 2
    return loss, {"loss_clean": loss_clean.detach(), "loss_adv": loss_adv.detach()}  # tensors: no host sync


def standard_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, mix):
    """ERM, Mixup and Manifold Mixup: one (possibly mixed) loss on the clean batch."""
    loss = mixed_loss(model, mix, x, y)
    return loss, {"loss_clean": loss.detach()}


@dataclass(frozen=True)
class MethodSpec:
    """A training method: which Mix it uses and whether it trains on adversarial examples."""

    name: str
    label: str  # the row name in the paper's tables
    mix: str  # 'none', 'mixup' or 'manifold-mixup'
    adversarial: bool


METHODS: dict[str, MethodSpec] = {
    m.name: m
    for m in [
        MethodSpec("erm", "Baseline", "none", False),
        MethodSpec("mixup", "Mixup", "mixup", False),
        MethodSpec("manifold-mixup", "Manifold Mixup", "manifold-mixup", False),
        MethodSpec("pgd", "PGD (7 steps)", "none", True),
        MethodSpec("iat-mixup", "Interpolated Adversarial Training (with Mixup)", "mixup", True),
        MethodSpec("iat-manifold-mixup", "Interpolated Adversarial Training (Manifold Mixup)",
                   "manifold-mixup", True),
    ]
}


def method_names() -> list[str]:
    return list(METHODS)


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise UsageError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


def make_mix(spec: MethodSpec, mixup_alpha: float, manifold_alpha: float, *, lam_per: str = "batch",
             mix_layers: tuple[int, ...] = (0, 1, 2)):
    if spec.mix == "mixup":
        return Mixup(alpha=mixup_alpha, lam_per=lam_per)
    if spec.mix == "manifold-mixup":
        return ManifoldMixup(alpha=manifold_alpha, lam_per=lam_per, layers=mix_layers)
    return NoMix()


def make_loss_fn(spec: MethodSpec, mix, attack: Attack | None) -> Callable:
    """`loss_fn(model, x, y) -> (loss, metrics)` for one batch: the method's loss with its Mix (and attack) bound."""
    if spec.adversarial:
        if attack is None:
            raise ValueError(f"method {spec.name!r} needs an attack")
        return functools.partial(interpolated_adversarial_loss, mix=mix, attack=attack)
    return functools.partial(standard_loss, mix=mix)
