"""The run state: everything that decides the rest of a run, created fresh or restored from a checkpoint.

Config, model, optimizer, the global RNGs, the position (epoch, step) and the metrics and running
sums so far. The data order of an epoch is a function of (seed, epoch) alone (`epoch_order`) and
the learning rate a function of the epoch alone (`lr_at`), so neither needs saving.
"""

from __future__ import annotations

import logging
import random
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path

import numpy as np
import torch

from iat.config import TrainConfig, build_model
from iat.distributed import SINGLE, World, rank_seed
from iat.errors import UsageError
from iat.models import MixableNet
from iat.training.ema import EMA
from iat.training.resume import validate_checkpoint

log = logging.getLogger("iat.train")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The order of the training examples in `epoch`, a function of (seed, epoch) alone."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g)


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """The learning rate of (0-based) `epoch`: a function of the epoch alone, so nothing to checkpoint."""
    return cfg.lr * cfg.lr_gamma ** sum(epoch >= m for m in cfg.resolved_milestones())


def rng_state(device: torch.device | None = None) -> dict:
    """The global RNG states as tensors and plain values (loadable with weights_only=True).

    Of the CUDA generators only the training `device`'s is saved (never all visible GPUs': a node
    with fewer GPUs could not restore those), with the device's name for a warning on resume.
    """
    version, py_state, gauss_next = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": torch.tensor(py_state, dtype=torch.int64),  # 624 words + position
        "python_gauss": gauss_next,  # None or the cached second value of random.gauss
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    state["device_name"] = device_name(device)
    return state


def device_name(device: torch.device | None) -> str:
    """'cuda: NVIDIA H100 80GB HBM3' or 'cpu'."""
    if device is not None and device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return "cpu"


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    """Restore `rng_state`'s states; the CUDA state goes to the training `device` (none for a CPU run).

    Older checkpoints hold a list with one state per visible GPU: the training device's entry is
    taken if present. A checkpoint written on another device type or GPU model resumes with a warning.
    """
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    torch.set_rng_state(state["torch"])
    if device is not None and device.type == "cuda" and "cuda" in state:
        cuda = state["cuda"]
        if isinstance(cuda, (list, tuple)):  # the old format: every visible GPU's
            index = device.index if device.index is not None else torch.cuda.current_device()
            cuda = cuda[index] if index < len(cuda) else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)
    saved, here = state.get("device_name"), device_name(device)
    if saved is not None and saved != here:
        log.warning("the checkpoint was written on %s and resumes on %s: the resumed run is valid but not "
                    "bit-identical to an uninterrupted one", saved, here)


def fresh_running() -> dict:
    return {"loss_sum": 0.0, "count": 0, "seconds": 0.0}


# What a checkpoint's restore can raise when the checkpoint is another run's or damaged.
_RESTORE_ERRORS = (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError)


@dataclass
class RunState:
    """The model, its optimizer and where the run is: `epoch` (0-based) and `step` within it."""

    cfg: TrainConfig
    model: MixableNet
    optimizer: torch.optim.Optimizer
    _: KW_ONLY
    epoch: int = 0
    step: int = 0
    metrics: list[dict] = field(default_factory=list)
    running: dict = field(default_factory=fresh_running)
    world: World = SINGLE
    ema: EMA | None = None  # --ema: the averaged weights, updated after each step

    @classmethod
    def create(cls, cfg: TrainConfig, device: torch.device, world: World = SINGLE) -> RunState:
        """A new run: seed every RNG, then build the model (its initialization draws from torch's RNG).

        Every rank builds the same model; then ranks other than 0 switch to their own streams.
        """
        seed_everything(cfg.seed)
        model = build_model(cfg).to(device)
        if world.size > 1:
            if cfg.sync_bn:
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # keeps the parameters
            if world.rank:
                seed_everything(rank_seed(cfg.seed, world.rank))
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                    weight_decay=cfg.weight_decay)
        return cls(cfg, model, optimizer, world=world, ema=EMA(model, cfg.ema) if cfg.ema else None)

    def restore(self, ckpt: dict, path: Path, steps_per_epoch: int) -> None:
        """Continue from a checkpoint checked by `resume.check_checkpoint`; a misfit is a one-line UsageError."""
        validate_checkpoint(ckpt, path, self.model, self.optimizer, self.cfg, steps_per_epoch)
        if ckpt["step"] > steps_per_epoch:
            raise UsageError(f"{path} is at step {ckpt['step']} of an epoch of {steps_per_epoch} steps; "
                             f"delete {path} to restart the run from scratch")
        for part, restore in (("weights", lambda: self.model.load_state_dict(ckpt["model"])),
                              ("optimizer state", lambda: self.optimizer.load_state_dict(ckpt["optimizer"])),
                              ("RNG state", lambda: self.restore_rank(ckpt)),
                              ("EMA state", lambda: self.ema is not None and self.ema.load_state_dict(ckpt["ema"]))):
            try:
                restore()
            except _RESTORE_ERRORS as e:
                first = " ".join((str(e).strip().splitlines() or [type(e).__name__])[:2])[:150]
                raise UsageError(f"{path} cannot be restored: its {part} failed to load into this run's "
                                 f"{self.cfg.arch!r} model ({first}); delete {path} to restart the run "
                                 "from scratch") from None
        self.epoch, self.step = ckpt["epoch"], ckpt["step"]
        self.metrics = ckpt["metrics"]
        if self.world.size == 1:
            self.running = ckpt["running"]

    def rank_state(self) -> dict:
        """What differs between the ranks of a run: RNG, running sums, BatchNorm statistics (no --sync-bn)."""
        return {"rng": rng_state(self.device), "running": dict(self.running),
                "buffers": {k: b.detach().cpu().clone() for k, b in self.model.named_buffers()}}

    def restore_rank(self, ckpt: dict) -> None:
        """This rank's own part of a checkpoint (one process: the top-level RNG state)."""
        if self.world.size == 1:
            return set_rng_state(ckpt["rng"], self.device)
        own = ckpt["ranks"][self.world.rank]
        set_rng_state(own["rng"], self.device)
        self.running = own["running"]
        with torch.no_grad():
            for k, b in self.model.named_buffers():
                b.copy_(own["buffers"][k])

    def start_epoch(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.cfg, self.epoch)
        self.model.train()

    def advance(self, loss: float, n: int) -> None:
        """Count one finished update of `n` examples."""
        self.running["loss_sum"] += loss * n
        self.running["count"] += n
        self.step += 1

    def mean_loss(self) -> float:
        return self.running["loss_sum"] / max(self.running["count"], 1)

    def end_epoch(self) -> dict:
        """Record the finished epoch's metrics row and move to the next epoch; return the row."""
        row = {"epoch": self.epoch + 1, "lr": lr_at(self.cfg, self.epoch), "train_loss": self.mean_loss(),
               "seconds": round(self.running["seconds"], 3)}
        self.metrics.append(row)
        self.epoch, self.step, self.running = self.epoch + 1, 0, fresh_running()
        return row

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())

    def checkpoint(self) -> dict:
        """Everything `restore` needs, as tensors and plain values (loadable with weights_only=True)."""
        ckpt = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "epoch": self.epoch,
                "step": self.step, "metrics": self.metrics, "running": dict(self.running),
                "rng": rng_state(self.device), "config": self.cfg.to_dict()}
        if self.ema is not None:
            ckpt["ema"] = self.ema.state_dict()
        if self.world.size > 1:  # a collective: every rank calls it, rank 0 gets every rank's part
            ckpt["ranks"] = self.world.gather(self.rank_state())
        return ckpt
