"""The catastrophic-overfitting guard: at each epoch's end, PGD on a fixed batch; stop if it collapses.

Single-step adversarial training can overfit catastrophically (Wong et al. 2020, Sec. 5): within an
epoch the model learns to defeat the one-step attack it trains against while its accuracy under PGD
falls to about zero. The training loss does not show it, so the guard measures it: PGD-10 (the
training eps, step eps/4, a fixed random start) on 256 training images chosen once from the seed
(all of them if there are fewer), without augmentation; under torchrun, rank 0 measures for all.
Their clean and PGD accuracy go into the epoch's metrics.jsonl row (`guard_clean_acc`, `guard_pgd_acc`).

Collapse: PGD accuracy below 10% and below a fifth of its best so far, once that best reached 20%.
A collapse is an order-of-magnitude drop to near zero within an epoch, while honest training moves
it by a few points; below a best of 20% a drop is within the noise of 256 images (1 image = 0.4%).
On a collapse the guard writes the row (with `catastrophic_overfitting: true`), logs it loudly and
raises CatastrophicOverfitting before the epoch's checkpoint is written, so checkpoint.pt stays the
last good epoch's (with --checkpoint-every, the last one written before the measurement).

The guard never changes the run: it draws from its own generator and restores torch's RNG
(`fork_rng`), and the model is left as found (`frozen`), so a guarded run trains the same weights.
"""

from __future__ import annotations

import logging
import time

import torch

from iat.attacks import PGD, SINGLE_STEP, frozen
from iat.config import TrainConfig
from iat.fp32 import fp32_evaluation
from iat.methods import get_method
from iat.training.checkpoint import Checkpointer
from iat.training.faults import TrainingError
from iat.training.state import RunState
from iat.training.step import TrainData

log = logging.getLogger("iat.train")

GUARD_IMAGES = 256
GUARD_STEPS = 10
GUARD_SEED = 0x5EED  # added to the run's seed: the guard's images and starts, apart from training's streams
COLLAPSE_RATIO = 0.2  # below a fifth of the best so far ...
COLLAPSE_FLOOR = 0.10  # ... and below 10% ...
MIN_BEST = 0.20  # ... once the best reached 20%


class CatastrophicOverfitting(TrainingError):
    """PGD accuracy on the guard's batch collapsed; the last good checkpoint is kept."""


def guard_on(cfg: TrainConfig) -> bool:
    """--co-guard on, or auto with a single-step attack; never for a method without an attack or at eps 0."""
    if not get_method(cfg.method).adversarial or cfg.eps == 0:
        return False
    return cfg.co_guard == "on" or (cfg.co_guard == "auto" and cfg.attack in SINGLE_STEP)


def guard_batch(data: TrainData, seed: int, n: int = GUARD_IMAGES) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` training images chosen from the seed alone (the same every epoch and on resume), unaugmented."""
    g = torch.Generator().manual_seed(seed + GUARD_SEED)
    return data.images(torch.randperm(len(data), generator=g)[:n])


@fp32_evaluation()
def measure(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> tuple[float, float]:
    """(clean accuracy, PGD-10 accuracy) of `model` on (x, y); torch's RNG and the model are left as found."""
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed + GUARD_SEED)  # the same random start every epoch: epochs compare like with like
        x_adv = PGD(model, eps, eps / 4, GUARD_STEPS)(x, y)
        with frozen(model), torch.no_grad():
            clean = (model(x).argmax(1) == y).float().mean().item()
            robust = (model(x_adv).argmax(1) == y).float().mean().item()
    return clean, robust


def collapsed(acc: float, best: float) -> bool:
    """The rule above: a drop to below COLLAPSE_FLOOR and COLLAPSE_RATIO x best, once best >= MIN_BEST."""
    return best >= MIN_BEST and acc < COLLAPSE_FLOOR and acc < COLLAPSE_RATIO * best


def check_overfitting(state: RunState, data: TrainData, checkpointer: Checkpointer) -> None:
    """At an epoch's end (its row already in `state.metrics`, its checkpoint not yet written): measure,
    record, and raise CatastrophicOverfitting on a collapse. Does nothing when the guard is off."""
    cfg = state.cfg
    if not guard_on(cfg):
        return
    started = time.perf_counter()
    best = max((r.get("guard_pgd_acc", 0.0) for r in state.metrics[:-1]), default=0.0)
    x, y = guard_batch(data, cfg.seed)
    # under torchrun, rank 0 measures and every rank gets its numbers: the ranks' BatchNorm statistics
    # differ, and all must take the same decision (and write the same row) or none can stop cleanly
    clean, robust = state.world.on_main(lambda: measure(state.model, x, y, cfg.eps, cfg.seed))
    row = state.metrics[-1]
    row.update(guard_clean_acc=round(clean, 4), guard_pgd_acc=round(robust, 4),
               guard_seconds=round(time.perf_counter() - started, 3))
    log.info("guard: PGD-%d accuracy %.1f%% (best of earlier epochs %.1f%%), clean %.1f%% on %d fixed training "
             "images", GUARD_STEPS, 100 * robust, 100 * best, 100 * clean, len(y))
    if not collapsed(robust, best):
        return
    row["catastrophic_overfitting"] = True
    checkpointer.save_metrics(state.metrics)
    message = (f"catastrophic overfitting at epoch {row['epoch']}: PGD-{GUARD_STEPS} accuracy on {len(y)} "
               f"fixed training images fell to {100 * robust:.1f}% from a best of {100 * best:.1f}%; "
               f"the last good checkpoint in {checkpointer.out} is kept; retrain with --attack n-fgsm or pgd, "
               "or a smaller --eps or --lr")
    log.error("!!! %s", message)
    raise CatastrophicOverfitting(message)
