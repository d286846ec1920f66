"""The training methods, each a loss on one batch: the paper's six, and the baselines TRADES and MART.

Every method is `method(model, x, y) -> (loss, metrics)`. The paper's adversarial ones are Algorithm 1:
`interpolated_adversarial_loss` below, with Mix = identity for plain PGD training. TRADES and MART are
their papers' objectives (`trades_loss`, `mart_loss`: public, to be checked against the papers), and
`iat-trades` is Algorithm 1's Mix applied to both terms of TRADES (new here: `iat_trades_loss`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
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


# ------------------------------------------------------------------------------------- TRADES and MART


def _trades_terms(logits: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """CE(f(x), y) and KL(f(x) || f(x')) summed over classes, averaged over the batch (the reference's
    `(1/B) * KLDivLoss(size_average=False)`); the clean prediction is not detached, as in the reference."""
    ce = F.cross_entropy(logits, y)
    kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction="sum") / len(logits)
    return ce, kl


def trades_loss(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """TRADES (Zhang et al. 2019, https://arxiv.org/abs/1901.08573, eq. 5): CE(f(x), y) + beta * KL(f(x) || f(x')).

    One forward pass each of x and x' in the model's current mode (the reference runs x twice, for the CE and
    for the KL target: the same values in train mode, one more BatchNorm running-statistics update).
    """
    ce, kl = _trades_terms(model(x), model(x_adv), y)
    return ce + beta * kl


def _mart_terms(logits: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """MART's boosted CE on x' and its KL(f(x) || f(x')) weighted by 1 - p_y(x), batch means; the
    reference's constants (1.0001, 1e-12, 1.0000001) kept."""
    adv_probs = F.softmax(logits_adv, dim=1)
    top2 = torch.argsort(adv_probs, dim=1)[:, -2:]  # the two most likely classes of x', (N, 2)
    wrong = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])  # the most likely wrong class
    bce = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), wrong)
    nat_probs = F.softmax(logits, dim=1)
    true_probs = nat_probs.gather(1, y[:, None]).squeeze(1)  # p_y(x), (N,)
    kl = F.kl_div(torch.log(adv_probs + 1e-12), nat_probs, reduction="none").sum(1)  # (N,)
    return bce, (kl * (1.0000001 - true_probs)).sum() / len(logits)


def mart_loss(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """MART (Wang et al. 2020, https://openreview.net/forum?id=rklOg6EFwS, eq. 8): BCE(f(x'), y) + beta * mean of
    KL(f(x) || f(x')) * (1 - p_y(x)), where BCE is CE(f(x'), y) - log(1 - max_{k != y} p_k(x'))."""
    bce, kl = _mart_terms(model(x), model(x_adv), y)
    return bce + beta * kl


def trades_method(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, attack: Attack, beta: float):
    """TRADES's update: x' = attack(x) (PGD on the KL term), then `trades_loss`."""
    x_adv = attack(x, y)
    ce, kl = _trades_terms(model(x), model(x_adv), y)
    return ce + beta * kl, {"loss_clean": ce.detach(), "loss_adv": kl.detach()}


def mart_method(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, attack: Attack, beta: float):
    """MART's update: x' = attack(x) (PGD on cross-entropy), then `mart_loss`."""
    x_adv = attack(x, y)
    bce, kl = _mart_terms(model(x), model(x_adv), y)
    return bce + beta * kl, {"loss_adv": bce.detach(), "loss_kl": kl.detach()}


def iat_trades_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, mix, attack: Attack, beta: float):
    """IAT-TRADES (new in iat, not from a paper): Algorithm 1's Mix applied to both terms of TRADES.

        x' = attack(x, y)                                        TRADES's PGD on the KL term, unmixed batch
        L_c = Loss(f, Mix, x, y)                                 a Mix draw of its own, as in Algorithm 1
        L_a = KL(f(Mix_d(x)) || f(Mix_d(x')))                    one new draw d, applied to x and to x'
        L = L_c + beta * L_a

    With Mix = identity it is TRADES exactly; each term draws its own Mix, as Algorithm 1's two Loss calls do.
    The KL term mixes x and x' with the same draw, so it compares the prediction at one interpolated clean
    point with that at the same interpolation of the adversarial points (three forward passes, TRADES's two).
    """
    x_adv = attack(x, y)
    loss_clean = mixed_loss(model, mix, x, y)  # L_c
    draw = mix.draw(len(x), x.device)  # d
    logits = model(x, mix=draw) if draw is not None else model(x)
    logits_adv = model(x_adv, mix=draw) if draw is not None else model(x_adv)
    kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction="sum") / len(x)  # L_a
    return loss_clean + beta * kl, {"loss_clean": loss_clean.detach(), "loss_adv": kl.detach()}


# ------------------------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class MethodSpec:
    """A training method: which Mix it uses, whether it trains on adversarial examples, and its objective."""

    name: str
    label: str  # the row name in the paper's tables (and in reports)
    mix: str  # 'none', 'mixup' or 'manifold-mixup'
    adversarial: bool
    objective: str = "iat"  # 'iat' (Algorithm 1, or one mixed loss without attack), 'trades', 'mart'
    paper: bool = True  # one of the paper's six rows (its tables and the demo)

    @property
    def inner(self) -> str:
        """What the method's PGD climbs (iat.attacks.training.INNER_OBJECTIVES)."""
        return {"iat": "ce", "trades": "kl", "mart": "ce-noise"}[self.objective]

    @property
    def uses_beta(self) -> bool:
        return self.objective in ("trades", "mart")


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
        MethodSpec("trades", "TRADES", "none", True, "trades", paper=False),
        MethodSpec("mart", "MART", "none", True, "mart", paper=False),
        MethodSpec("iat-trades", "IAT-TRADES (Mixup)", "mixup", True, "trades", paper=False),
    ]
}
BETA = 6.0  # TRADES's and MART's beta: both references' default for CIFAR-10


def method_names() -> list[str]:
    """Every method (`--method`): the paper's six, then the baselines."""
    return list(METHODS)


def paper_method_names() -> list[str]:
    """The paper's six methods, in its tables' row order."""
    return [name for name, spec in METHODS.items() if spec.paper]


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


def make_loss_fn(spec: MethodSpec, mix, attack: Attack | None, beta: float = BETA) -> Callable:
    """`loss_fn(model, x, y) -> (loss, metrics)` for one batch: the method's loss with its Mix (and attack, beta)
    bound."""
    if spec.adversarial:
        if attack is None:
            raise ValueError(f"method {spec.name!r} needs an attack")
        if spec.objective == "trades":
            if spec.mix == "none":
                return functools.partial(trades_method, attack=attack, beta=beta)
            return functools.partial(iat_trades_loss, mix=mix, attack=attack, beta=beta)
        if spec.objective == "mart":
            return functools.partial(mart_method, attack=attack, beta=beta)
        return functools.partial(interpolated_adversarial_loss, mix=mix, attack=attack)
    return functools.partial(standard_loss, mix=mix)
