"""Adversarial Weight Perturbation (Wu, Xia & Wang 2020, https://arxiv.org/abs/2004.05884), on any adversarial method.

Per update, after the method's attack: one ascent step on the method's adversarial loss in weight space, each
layer's step scaled to gamma times that layer's weight norm; the method's loss is then taken at the perturbed
weights, and the perturbation is removed again after the optimizer step, so the update is the unperturbed
weights moved by the gradient taken at the perturbed point. As the reference (csdongxian/AWP `utils_awp.py`):
only multi-dimensional `weight` tensors are perturbed (not biases, not BatchNorm), the step direction is the
gradient (its proxy SGD step), the ascent pass leaves BatchNorm's running statistics as they were (its proxy is
a copy), and no AWP runs in the first `warmup` epochs.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from iat.attacks import Attack
from iat.methods import BETA, MethodSpec, mart_loss, trades_loss

TINY = 1e-20  # the reference's EPS in the norm ratio


def ascent_loss(spec: MethodSpec, model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                beta: float = BETA) -> torch.Tensor:
    """The loss AWP climbs: the reference's per method (AT: CE on x'; TRADES and MART: their losses)."""
    if spec.objective == "trades":
        return trades_loss(model, x, x_adv, y, beta)
    if spec.objective == "mart":
        return mart_loss(model, x, x_adv, y, beta)
    return F.cross_entropy(model(x_adv), y)


class Replay(Attack):
    """An 'attack' that returns the examples it was given: the method's loss sees the x' that AWP used."""

    def __init__(self, model: nn.Module):
        super().__init__(model, eps=0.0, check_range=False)
        self.x_adv: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.x_adv


class AWP:
    """gamma: perturbation size relative to each layer's weight norm (reference: 0.01 for AT, 0.005 for TRADES);
    warmup: epochs without AWP. `model` is the plain module (not DDP's wrapper), as the attack's."""

    def __init__(self, model: nn.Module, spec: MethodSpec, gamma: float, warmup: int = 0, beta: float = BETA):
        self.model, self.spec, self.gamma, self.warmup, self.beta = model, spec, gamma, warmup, beta
        self.params = [p for name, p in model.named_parameters() if p.dim() > 1 and name.endswith("weight")]
        self.active = True  # set per epoch by the training loop (warm-up)
        self._delta: list[torch.Tensor] | None = None

    def perturb(self, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor) -> None:
        """Add gamma * ||w|| * g / ||g|| to each perturbed weight, g the ascent loss's gradient at w."""
        buffers = [b.detach().clone() for b in self.model.buffers()]
        with torch.enable_grad():
            grads = torch.autograd.grad(ascent_loss(self.spec, self.model, x, x_adv, y, self.beta), self.params)
        with torch.no_grad():
            for b, saved in zip(self.model.buffers(), buffers):  # the reference's proxy leaves them untouched
                b.copy_(saved)
            self._delta = [self.gamma * w.norm() / (g.norm() + TINY) * g for w, g in zip(self.params, grads)]
            for w, d in zip(self.params, self._delta):
                w.add_(d)

    def restore(self) -> None:
        """Remove the perturbation (after the optimizer step)."""
        if self._delta is None:
            return
        with torch.no_grad():
            for w, d in zip(self.params, self._delta):
                w.sub_(d)
        self._delta = None

    def __repr__(self) -> str:
        return f"AWP(gamma={self.gamma}, warmup={self.warmup})"


def awp_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, attack: Attack, replay: Replay, awp: AWP,
             plain, replayed):
    """One update's loss with AWP: x' = attack(x), perturb the weights against x', then the method's loss
    (`replayed`, whose attack returns that x'). In the warm-up epochs: the method's loss alone (`plain`)."""
    if not awp.active:
        return plain(model, x, y)
    replay.x_adv = attack(x, y)
    awp.perturb(x, replay.x_adv, y)
    return replayed(model, x, y)


def with_awp(loss, spec: MethodSpec, mix, attack: Attack, awp: AWP, make_loss_fn) -> functools.partial:
    """The method's loss `loss` (bound to `attack`) wrapped with AWP."""
    replay = Replay(attack.model)
    replayed = make_loss_fn(spec, mix, replay, awp.beta)
    return functools.partial(awp_loss, attack=attack, replay=replay, awp=awp, plain=loss, replayed=replayed)
