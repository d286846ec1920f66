"""The training loop: one method, one model, SGD with step decay, a checkpoint you can resume.

Read top to bottom: check `--out`, load the data, create (or restore) the run state, then for each
epoch run the steps, checkpointing as asked and at the epoch's end. The pieces live beside it:
`state` (what decides the rest of the run), `checkpoint` (the files), `signals`, `step`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tqdm import tqdm

from iat import runio
from iat.config import TrainConfig, resolve_device
from iat.errors import UsageError
from iat.train.checkpoint import Checkpointer, open_run_dir, run_config
from iat.train.guard import check_overfitting
from iat.train.resume import find_prior
from iat.train.signals import SignalGuard
from iat.train.state import RunState, epoch_order
from iat.train.step import Step, TrainData, make_objective

log = logging.getLogger("iat.train")


def train(cfg: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Train one run into `out` (see interfaces.md for its files); return the run directory.

    With `resume`, continue the run in `out` from its checkpoint (or start it if there is none);
    a finished run is left as it is. Everything that can be checked is checked before any file or
    directory is created: bad input raises UsageError and leaves the file system unchanged.
    """
    cfg.validate()
    out, device = Path(out), resolve_device(cfg.device)
    prior = find_prior(cfg, out, resume)
    if prior.complete:
        log.info("%s is already complete (%d epochs); nothing to do", out, cfg.epochs)
        return out
    data = TrainData.load(cfg, device)  # before any directory is created: a missing data set leaves nothing
    steps_per_epoch = data.steps_per_epoch(cfg.batch_size)
    state = RunState.create(cfg, device)
    loss_fn, described = make_objective(cfg, state.model)
    check_same_data(prior.config, len(data), out)
    if prior.checkpoint is not None:
        state.restore(prior.checkpoint, out / runio.CHECKPOINT, steps_per_epoch)

    open_run_dir(out, run_config(cfg, device=device, info=data.info, n=len(data)), prior, resume)
    log.info("training %s: %s on %s (%d examples), %s, device=%s", out, cfg.method, cfg.dataset, len(data),
             described, device)
    checkpointer = Checkpointer(out, cfg.checkpoint_every)
    step = Step(state.model, state.optimizer, loss_fn, out=out, amp=cfg.amp)
    with SignalGuard(out, lambda: (state.epoch, state.step)) as guard:
        while state.epoch < cfg.epochs:
            run_steps(state, data, step=step, checkpointer=checkpointer, guard=guard, progress=progress)
            if state.step == steps_per_epoch:  # the epoch is done: record it, checkpoint, then metrics.jsonl
                row = state.end_epoch()
                log.info("epoch %d/%d  lr %.4g  train_loss %.4f  %.1fs", row["epoch"], cfg.epochs, row["lr"],
                         row["train_loss"], row["seconds"])
                check_overfitting(state, data, checkpointer)  # before the checkpoint: a collapse keeps the last good
                checkpointer.save(state)
                checkpointer.save_metrics(state.metrics)
            if guard.signum is not None and state.epoch < cfg.epochs:  # (after the last epoch, save the weights)
                if state.step:  # mid-epoch; an epoch's end was checkpointed just above
                    checkpointer.save(state)
                raise guard.interrupted(state.epoch, state.step)
        checkpointer.save_weights(state.model)
    return out


def run_steps(state: RunState, data: TrainData, *, step: Step, checkpointer: Checkpointer, guard: SignalGuard,
              progress: bool) -> None:
    """The steps of `state.epoch` from `state.step` on, until its end or a signal; checkpoints as asked."""
    cfg = state.cfg
    steps_per_epoch = data.steps_per_epoch(cfg.batch_size)
    state.start_epoch()
    order = epoch_order(cfg.seed, state.epoch, len(data)).to(data.x.device)
    bar = tqdm(total=steps_per_epoch, initial=state.step, desc=f"epoch {state.epoch + 1}/{cfg.epochs}",
               disable=None if progress else True, leave=False, unit="batch")
    started = time.perf_counter()
    for x, y in data.batches(order, state.step, cfg.batch_size):
        step(state, x, y)
        bar.update(1)
        bar.set_postfix(loss=f"{state.mean_loss():.3f}")
        if guard.signum is not None:
            break
        if checkpointer.due(state, steps_per_epoch):
            state.running["seconds"] += time.perf_counter() - started
            started = time.perf_counter()
            checkpointer.save(state)
    bar.close()
    state.running["seconds"] += time.perf_counter() - started


def check_same_data(saved_config: dict | None, n: int, out: Path) -> None:
    """A resumed run must see the training set it started with."""
    if saved_config is not None and saved_config.get("n_train", n) != n:
        raise UsageError(f"the training set has {n} examples but the run in {out} was started with "
                         f"{saved_config['n_train']}; resume with the data it was trained on (--data-dir)")
