"""Measuring error under attack: which examples survive, spending work only on those that still do.

An example is robust only if the model classifies it correctly clean *and* at every point the
attack visits, in every restart: any point misclassified inside the eps-ball is an adversarial
example, whichever step or restart found it (the worst case per example). So an example leaves
the batch the moment it is misclassified, and a restart attacks only the survivors. A PGD-k run
also gives PGD-j for every j < k for free: with the same seed its first j steps are PGD-j.

The forward pass that yields the gradient at a point also says whether that point is
misclassified, so early stopping costs nothing. Only the input gets a gradient: parameters are
frozen (and restored) while attacking, and the model runs in eval mode.
"""

from __future__ import annotations

import bisect

import torch
from torch import nn
from tqdm import tqdm

from iat.attacks.budget import AttackBudget
from iat.attacks.core import LossFn, ce_loss, frozen, signed_step, uniform_start
from iat.distributed import SINGLE, World
from iat.errors import UsageError


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Predicted labels, batch by batch; NonFiniteOutputs if any logit is NaN or infinite."""
    if len(x) == 0:
        return torch.empty(0, dtype=torch.long, device=x.device)
    labels, bad = [], torch.zeros((), dtype=torch.long, device=x.device)
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size])
        bad += (~torch.isfinite(logits)).any(1).sum()  # on the device: one sync at the end, not one per batch
        labels.append(logits.argmax(1))
    if int(bad):
        raise NonFiniteOutputs(int(bad), len(x))
    return torch.cat(labels)


class NonFiniteOutputs(UsageError):
    """The model's logits are NaN or infinite on some inputs, although its weights are finite (weights scaled
    past float32's range overflow inside the network). argmax of NaN is class 0, so such a model would be
    scored as a plausible error rate (88% on ten classes) instead of being refused."""

    def __init__(self, bad: int, n: int):
        super().__init__(f"the model's outputs are NaN or infinite on {bad} of {n} images, although its weights are "
                         "finite: the weights are damaged (scaled past float32's range); no error rate computed "
                         "from them means anything: restore them or train the run again")


def pgd_trace(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    budget: AttackBudget,
    *,
    loss_fn: LossFn = ce_loss,
    random_start: bool = True,
    early_stop: bool = True,
    record: list[int] | None = None,
) -> torch.Tensor:
    """One L-inf PGD run on one batch; bool (len(record), N): still correct at step k, per k in record.

    Step 0 is the start point (x, or a uniform random point of the ball), step t the point after t
    signed-gradient steps of `budget.step_size` (`budget.steps` in all), each projected to the ball and to [0,1].
    early_stop=True: row k says "correct at every step 0..k" and a misclassified example is
    dropped at once (the evaluation mode). early_stop=False: row k says "correct at step k" and
    every example takes every step (plain PGD, whose error may fall as steps grow).
    The caller sets the model's mode and the random seed (see `survivors`); restarts are its too.
    """
    steps = budget.steps
    record = sorted(set(record)) if record else [steps]
    if record[0] < 0 or record[-1] > steps:
        raise ValueError(f"record {record} must lie in [0, steps={steps}]")
    out = torch.ones(len(record), len(x), dtype=torch.bool, device=x.device)
    alive = torch.arange(len(x), device=x.device)  # rows of x still being attacked
    x0, yb, xa = x, y, x.detach()
    if random_start:
        xa = uniform_start(x, budget.eps)
    for t in range(steps + 1):
        xa = xa.detach().requires_grad_(t < steps)
        with torch.enable_grad():
            logits = model(xa)
        wrong = logits.detach().argmax(1) != yb
        if early_stop:
            first = bisect.bisect_left(record, t)  # a miss at step t counts for every k >= t
            out[first:, alive[wrong]] = False
        elif t in record:
            out[record.index(t), alive] = ~wrong
        if t == steps or (early_stop and bool(wrong.all())):
            break
        keep = ~wrong if early_stop else torch.ones_like(wrong)
        loss = loss_fn(logits[keep], yb[keep])
        (grad,) = torch.autograd.grad(loss, xa)
        if early_stop and not bool(keep.all()):  # drop the fooled examples from the batch
            alive, x0, yb, xa, grad = alive[keep], x0[keep], yb[keep], xa[keep], grad[keep]
        xa = signed_step(xa, grad, budget.step_size, x0, budget.eps)
    return out


def survivors(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    budget: AttackBudget,
    *,
    correct: torch.Tensor | None = None,
    loss_fn: LossFn = ce_loss,
    random_start: bool = True,
    early_stop: bool = True,
    record: list[int] | None = None,
    batch_size: int = 500,
    seed: int = 0,
    progress: bool = False,
    desc: str = "pgd",
    world: World = SINGLE,
) -> torch.Tensor:
    """Bool (len(record), N): which examples PGD fails to fool, attacking only the ones that need it.

    x: images in [0,1] (N, C, H, W) on the model's device; correct: examples still to attack
    (default: those classified correctly clean); the rest count as errors and cost nothing.
    FGSM is `AttackBudget.fgsm(eps)` with `random_start=False`. Seeded with `seed` before the first
    batch. record (default [budget.steps]) lists the step counts to report; with restarts > 1 only
    [budget.steps]. Under torchrun (`world`) each rank attacks every size-th batch and the masks are
    merged after each restart; the other batches' random starts are drawn and dropped, so every
    batch starts where it does in one process and the result is the same. Usage:
    `err = error_pct(survivors(model, x, y, AttackBudget(8/255, 2/255, steps=20))[-1])`.
    """
    steps = budget.steps
    record = sorted(set(record)) if record else [steps]
    if budget.restarts > 1 and record != [steps]:
        raise ValueError("restarts > 1 reports the final step only; leave record at [steps]")
    with frozen(model, "eval"):
        if correct is None:
            correct = predict(model, x, batch_size) == y
        out = correct.to(torch.bool).expand(len(record), len(x)).clone()
        if budget.eps == 0:
            return out  # the ball is the point itself: error is the clean error
        torch.manual_seed(seed)
        for _ in range(budget.restarts if random_start else 1):
            todo = out[-1].nonzero().flatten() if early_stop else correct.nonzero().flatten()
            if not len(todo):
                break  # nothing left to attack: further restarts would only loop
            for i in tqdm(range(0, len(todo), batch_size), desc=desc, disable=None if progress else True,
                          leave=False):
                idx = todo[i : i + batch_size]
                if world.owns(i // batch_size):
                    out[:, idx] &= pgd_trace(model, x[idx], y[idx], budget, loss_fn=loss_fn,
                                             random_start=random_start, early_stop=early_stop, record=record)
                elif random_start:  # another rank's batch: draw its start anyway, to stay in step
                    torch.empty_like(x[idx]).uniform_(-budget.eps, budget.eps)
            out = world.all_and(out)
    return out


def error_pct(correct: torch.Tensor) -> float:
    """Error in % from a bool mask of correctly classified examples."""
    n = correct.numel()
    return 100.0 * (n - int(correct.sum().item())) / n if n else 0.0
