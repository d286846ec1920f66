"""An exponential moving average of the weights (`--ema DECAY`), saved beside the trained ones.

After every update t = 0, 1, ...: ema <- d_t * ema + (1 - d_t) * w, with d_t = min(decay, (1 + t) / (10 + t)), the
warm-up of the decay in the reference (Rebuffi et al. 2021, https://arxiv.org/abs/2103.01946; the code of
imrahulr/adversarial_robustness_pytorch, `ema_update` with dynamic decay), starting from the initial weights.
The average never feeds back into training: a run with --ema trains the same weights as one without.

BatchNorm: the averaged weights never ran forward, so no running statistics belong to them. The saved
model_ema.safetensors gets its own, recomputed at the end of training as torch.optim.swa_utils.update_bn does
for SWA: the averaged model in train mode, statistics reset, a cumulative average (momentum None) over one pass
of the clean training images in order, without augmentation and without gradients.
"""

from __future__ import annotations

import torch
from torch import nn

from iat.config import TrainConfig, build_model
from iat.data import load_data

EMA_WEIGHTS = "model_ema.safetensors"


class EMA:
    """The averaged parameters of `model` (a copy, on its device) and the number of updates averaged."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.params = {name: p.detach().clone() for name, p in model.named_parameters()}
        self.updates = 0

    def rate(self) -> float:
        """d_t of the next update: the decay, warmed up."""
        t = self.updates
        return min(self.decay, (1 + t) / (10 + t))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.rate()
        for name, p in model.named_parameters():
            self.params[name].mul_(d).add_(p.detach(), alpha=1 - d)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"params": dict(self.params), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        if set(state["params"]) != set(self.params) or not isinstance(state["updates"], int):
            raise ValueError("the EMA state does not belong to this model")
        for name, t in self.params.items():
            t.copy_(state["params"][name])
        self.updates = state["updates"]

    def averaged_model(self, cfg: TrainConfig, model: nn.Module) -> nn.Module:
        """A new model with the averaged weights and BatchNorm statistics recomputed for them (see the module)."""
        avg = build_model(cfg).to(next(model.parameters()).device)
        avg.load_state_dict({k: v for k, v in model.state_dict().items()}, strict=True)
        with torch.no_grad():
            for name, p in avg.named_parameters():
                p.copy_(self.params[name])
        recompute_bn(avg, cfg)
        return avg.eval()


@torch.no_grad()
def recompute_bn(model: nn.Module, cfg: TrainConfig) -> None:
    """BatchNorm running statistics of `model` as a cumulative average over the clean training images."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    x, _ = load_data(cfg.dataset, "train", cfg.data_dir, limit=cfg.train_size, download=False)
    device = next(model.parameters()).device
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
    model.train()
    for i in range(0, len(x), cfg.batch_size):
        if len(x) - i > 1:  # BatchNorm cannot train on one value per channel
            model(x[i : i + cfg.batch_size].to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
