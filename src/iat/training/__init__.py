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

from pathlib import Path

from iat.config import TrainConfig
from iat.distributed import world_from_env
from iat.rundir import outdir
from iat.rundir.read import check_model_size
from iat.training.faults import CheckpointWriteError, TrainingDiverged, TrainingError, TrainingInterrupted
from iat.training.loop import train
from iat.training.resume import is_complete
from iat.training.state import RunState, epoch_order, lr_at, rng_state, seed_everything, set_rng_state

__all__ = ["CheckpointWriteError", "RunState", "TrainingDiverged", "TrainingError", "TrainingInterrupted",
           "epoch_order", "is_complete", "lr_at", "rng_state",
           "seed_everything", "set_rng_state", "train", "train_run"]


def train_run(cfg: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """`iat.train(cfg, out)`: `train` with what the command adds, the model-size check before anything is
    allocated and the lock on `out` (a second writer is refused)."""
    cfg.validate()
    check_model_size(cfg)
    if world_from_env().rank != 0:  # under torchrun, rank 0 holds the lock for every rank
        return train(cfg, out, resume=resume, progress=progress)
    with outdir.lock_dir(outdir.check_out_dir(out), "--out"):
        return train(cfg, out, resume=resume, progress=progress)
