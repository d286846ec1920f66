"""Training: `train(cfg, out)` runs one method on one model into a run directory you can resume.

Resuming is exact. The checkpoint holds everything that decides the rest of the run: the weights
(with BatchNorm statistics), the optimizer (momentum buffers), epoch and step, the metrics so far,
and the RNG states of Python, NumPy and torch (augmentation, mixing, attack starts). The data order
of an epoch is a function of (seed, epoch) alone and the position in it is `step`; the learning rate
is a function of the epoch alone (`lr_at`), so there is no scheduler state to save. On the CPU a
run killed anywhere and resumed with the same options, torch version and thread count writes a
model.safetensors byte-for-byte equal to an uninterrupted run's (tests/test_resume.py).

Faults: a NaN or infinite loss (or non-finite weights) raises TrainingDiverged before anything
bad is saved; SIGINT or SIGTERM finishes the current step, writes a checkpoint and raises
TrainingInterrupted; a failed checkpoint write (full disk) raises CheckpointWriteError and leaves
the previous checkpoint intact.

The pieces, each testable alone: `loop` (train itself), `state` (RunState: model, optimizer, RNG,
position), `checkpoint` (the run directory's files), `signals` (SignalGuard), `step` (one update and
the batches of an epoch), `resume` (what --out already holds).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

from iat.config import TrainConfig
from iat.distributed import world_from_env
from iat.rundir import outdir
from iat.rundir.read import check_model_size
from iat.train.faults import CheckpointWriteError, TrainingDiverged, TrainingError, TrainingInterrupted
from iat.train.loop import train
from iat.train.resume import is_complete
from iat.train.state import RunState, epoch_order, lr_at, rng_state, seed_everything, set_rng_state

__all__ = ["CheckpointWriteError", "RunState", "TrainingDiverged", "TrainingError", "TrainingInterrupted",
           "epoch_order", "is_complete", "lr_at", "rng_state",
           "seed_everything", "set_rng_state", "train", "train_run"]


def train_run(cfg: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """The same run as `iat train` with `cfg`'s options and `--out out`; return the run directory.

    What the command adds to `train`: the width check before anything is allocated and the lock on `out`
    (a second writer is refused). Like `train`, it puts torch's global TF32 and cuDNN flags, which the run
    sets, back as they were: a script goes on after it. Bad input
    raises iat.errors.UsageError; a diverged run or a full disk, TrainingError.
    """
    cfg.validate()
    check_model_size(cfg)
    if world_from_env().rank != 0:  # under torchrun, rank 0 holds the lock for every rank
        return train(cfg, out, resume=resume, progress=progress)
    with outdir.lock_dir(outdir.check_out_dir(out), "--out"):
        return train(cfg, out, resume=resume, progress=progress)


class _CallablePackage(types.ModuleType):
    """`iat.train(cfg, out)` is the user's way to train (docs/interfaces.md), and `iat.train` is also this
    package: Python binds a subpackage's name on its parent, so the package itself takes the call."""

    def __call__(self, cfg: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True) -> Path:
        return train_run(cfg, out, resume=resume, progress=progress)


sys.modules[__name__].__class__ = _CallablePackage
