"""The pieces every L-inf attack loop is made of: the start, the step, the projection, the input
gradient, and the context that leaves the model exactly as it was found.

PGD (training), FGSM and the worst-case evaluation engine are each a loop over these, so they
take the same steps bit for bit: a PGD-k run of the evaluation engine visits the points the PGD
class visits with the same seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

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
