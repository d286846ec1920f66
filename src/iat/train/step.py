"""One training update, and the batches of an epoch that feed it.

`Step` is the seam for what comes next (AMP variants, torch.compile, a sync-free loop, DDP): it gets
the model, the optimizer and the method's loss and does exactly one update per call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from iat.attacks import PGD
from iat.config import TrainConfig
from iat.data import DataInfo, augment, dataset_info, load_data
from iat.methods import get_method, make_loss_fn, make_mix
from iat.models import MixableNet
from iat.train.errors import diverged
from iat.train.state import RunState

LossFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict]]


def make_objective(cfg: TrainConfig, model: MixableNet) -> tuple[LossFn, str]:
    """The method's `loss_fn(model, x, y) -> (loss, metrics)` and a description for the log."""
    spec = get_method(cfg.method)
    mix = make_mix(spec, cfg.mixup_alpha, cfg.manifold_alpha, lam_per=cfg.lam_per, mix_layers=model.mix_layers)
    attack = PGD(model, cfg.eps, cfg.step_size, cfg.attack_steps, bn_mode=cfg.attack_bn) if spec.adversarial else None
    return make_loss_fn(spec, mix, attack), f"mix={mix!r}, attack={attack!r}"


@dataclass
class TrainData:
    """The training set, on the device, with what augmentation it gets."""

    x: torch.Tensor
    y: torch.Tensor
    info: DataInfo

    @classmethod
    def load(cls, cfg: TrainConfig, device: torch.device) -> TrainData:
        x, y = load_data(cfg.dataset, "train", cfg.data_dir, limit=cfg.train_size, download=cfg.download)
        return cls(x.to(device), y.to(device), dataset_info(cfg.dataset))

    def __len__(self) -> int:
        return len(self.x)

    def steps_per_epoch(self, batch_size: int) -> int:
        """ceil(n / batch_size), except that a last batch of one example joins the batch before it:
        BatchNorm cannot train on one value per channel."""
        steps = -(-len(self) // batch_size)
        return steps - 1 if steps > 1 and len(self) % batch_size == 1 else steps

    def batches(self, order: torch.Tensor, start: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The augmented (x, y) batches of an epoch in `order`, from batch `start` on.

        Lazy on purpose: augmentation draws from the RNG right before its step, so a checkpoint
        between two steps holds the RNG state the next batch starts from.
        """
        steps = self.steps_per_epoch(batch_size)
        for step in range(start, steps):
            idx = order[step * batch_size : (step + 1) * batch_size if step < steps - 1 else len(self)]
            yield augment(self.x[idx], self.info.crop_pad, self.info.flip), self.y[idx]


class Step:
    """One update: loss, finiteness check, zero_grad / backward / step, then the running sums."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn, *, out: Path,
                 amp: bool = False):
        self.model, self.optimizer, self.loss_fn, self.out, self.amp = model, optimizer, loss_fn, out, amp

    def __call__(self, state: RunState, x: torch.Tensor, y: torch.Tensor) -> None:
        """Update on (x, y) and count it in `state` (its position names the step if the loss is not finite)."""
        device_type = x.device.type
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.amp and device_type == "cuda"):
            loss, _ = self.loss_fn(self.model, x, y)
        if not torch.isfinite(loss):  # before the update: the weights stay the last good ones
            raise diverged(f"the loss became {loss.item()}", self.out, state.epoch, state.step + 1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        state.advance(loss.item(), len(x))
