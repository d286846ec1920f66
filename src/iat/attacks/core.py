"""The pieces every L-inf attack loop is made of: the start, the step, the projection, the input
gradient, the context that leaves the model exactly as it was found, and `Attack`, the base class whose
`attack(x, y)` is the one call of an attack, in training and in evaluation alike.

PGD (training), FGSM and the worst-case evaluation engine are each a loop over these, so they
take the same steps bit for bit: a PGD-k run of the evaluation engine visits the points the PGD
class visits with the same seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from iat.units import parse_eps

BN_MODES = ("eval", "train")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy: the sign of its input gradient is what L-inf attacks follow."""
    return F.cross_entropy(logits, y, reduction="sum")


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Back into the L-inf ball of radius eps around x, then into [0,1] (detached)."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1).detach()


def uniform_start(x: torch.Tensor, eps: float) -> torch.Tensor:
    """A uniform random point of the ball around x, inside [0,1]; draws one uniform tensor like x."""
    return project(x + torch.empty_like(x).uniform_(-eps, eps), x, eps)


def signed_step(x_adv: torch.Tensor, grad: torch.Tensor, step_size: float, x: torch.Tensor,
                eps: float) -> torch.Tensor:
    """One L-inf ascent step: x_adv + step_size * sign(grad), projected to the ball around x and [0,1]."""
    return project(x_adv.detach() + step_size * grad.sign(), x, eps)


def input_grad(model: nn.Module, loss_fn: LossFn, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d loss / d x at x_adv; parameters get no gradient."""
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
    return grad


@contextmanager
def frozen(model: nn.Module, mode: str = "eval") -> Iterator[nn.Module]:
    """The model in `mode` ('eval' or 'train') with parameters at `requires_grad=False`; on exit the
    mode and the flags are restored, and (for 'train', where BatchNorm updates them) the buffers.

    So an attack or an evaluation never changes the model, and no parameter's `.grad` is touched.
    In 'train' mode the attack runs on copies of the buffers, swapped in and out without writing
    into the originals: a clean forward pass before the attack may have saved them for its
    backward pass, and an in-place write would bump their autograd version ("modified by an
    inplace operation").
    """
    if mode not in BN_MODES:
        raise ValueError(f"mode must be one of {BN_MODES}, got {mode!r}")
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    originals = _swap_in_buffer_copies(model) if mode == "train" else None
    model.train(mode == "train")
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(was_training)
        if originals is not None:
            for module, name, tensor in originals:
                module._buffers[name] = tensor


def _swap_in_buffer_copies(model: nn.Module) -> list[tuple[nn.Module, str, torch.Tensor]]:
    """Replace every buffer by a copy; return (module, name, original) to put back."""
    originals = [(module, name, tensor) for module in model.modules()
                 for name, tensor in module._buffers.items() if tensor is not None]
    for module, name, tensor in originals:
        module._buffers[name] = tensor.detach().clone()
    return originals


class Attack:
    """Base class: `attack(x, y)` returns adversarial images in [0,1], detached.

    A subclass writes its loop in `__call__`, inside `with self.attacking(x):`, which holds what every
    attack shares: the range check, the precision, and the model frozen in the attack's BatchNorm mode.

    bn_mode: 'eval' (default) runs the model in eval mode while attacking; 'train' runs it in train
    mode (BatchNorm uses batch statistics) but restores the running statistics afterwards, so an
    attack never changes the model. Either way the model's own mode is restored on exit, and the
    gradient is taken with respect to the input only: no parameter's `.grad` is touched (see `frozen`).
    autocast: False (default) runs the attack in fp32 outside any autocast region around the call (the
    paper's attack); True runs it under the caller's autocast (training's `--attack-precision amp`:
    faster, but its input gradients are bf16, a weaker attack).
    check_range: refuse inputs outside [0,1] (default). Training turns it off: its images are in [0,1] by
    construction, and the check reads a value back from the device at every step.
    """

    def __init__(self, model: nn.Module, eps: float, bn_mode: str = "eval", loss_fn: LossFn = ce_loss, *,
                 autocast: bool = False, check_range: bool = True):
        if bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
        self.model, self.eps, self.bn_mode, self.loss_fn = model, parse_eps(eps, "eps"), bn_mode, loss_fn
        self.autocast, self.check_range = autocast, check_range

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @contextmanager
    def attacking(self, x: torch.Tensor) -> Iterator[None]:
        """The context of an attack's loop: `x` checked to be in [0,1] (with `check_range`), fp32 unless
        `autocast`, the model frozen in `bn_mode` (and restored on exit), gradients enabled."""
        if self.check_range and x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError(
                f"attack inputs must be images in [0,1] (normalization lives inside the model); "
                f"got range [{x.min().item():.3g}, {x.max().item():.3g}]"
            )
        precision = nullcontext() if self.autocast else torch.autocast(x.device.type, enabled=False)
        with precision, frozen(self.model, self.bn_mode), torch.enable_grad():
            yield

    def input_grad(self, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """d loss / d x at x_adv; parameters get no gradient."""
        return input_grad(self.model, self.loss_fn, x_adv, y)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
        return f"{type(self).__name__}({fields})"

    def describe(self) -> dict:
        described = {"eps": round(self.eps, 6), "bn_mode": self.bn_mode}
        return {**described, "autocast": True} if self.autocast else described
