"""The training loop: one method, one model, SGD with step decay, a checkpoint you can resume.

Read top to bottom: check `--out`, load the data, create (or restore) the run state, then for each
epoch run the steps, checkpointing as asked and at the epoch's end. The pieces live beside it:
`state` (what decides the rest of the run), `checkpoint` (the files), `signals`, `step`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import torch
from tqdm import tqdm

from iat.config import TrainConfig, resolve_device
from iat.distributed import World, process_group
from iat.errors import UsageError
from iat.rundir import files
from iat.tracking import NO_LOG, RunLog, for_run
from iat.training.checkpoint import Checkpointer, open_run_dir, run_config
from iat.training.faults import TrainingError, TrainingInterrupted, compile_failure
from iat.training.guard import check_overfitting
from iat.training.precision import restored_flags
from iat.training.resume import find_prior
from iat.training.signals import SignalGuard
from iat.training.speed import apply_speed
from iat.training.state import RunState, epoch_order
from iat.training.step import LossTally, TrainData, Update, make_objective, make_update

log = logging.getLogger("iat.train")
POSTFIX_EVERY = 20  # steps between progress-bar loss updates (each one is a host-device sync)


def train(cfg: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Train one run into `out` (see interfaces.md for its files); return the run directory.

    With `resume`, continue the run in `out` from its checkpoint (or start it if there is none);
    a finished run is left as it is. Everything that can be checked is checked before any file or
    directory is created: bad input raises UsageError and leaves the file system unchanged.
    Under torchrun every rank calls this: one run, its global batch split across the ranks (DDP).
    """
    cfg.validate()
    out, device = Path(out), resolve_device(cfg.device)
    cfg = apply_speed(cfg, device).validate()  # --speed fast: the options it stands for, recorded as such
    with restored_flags(), process_group(device) as world:  # TF32 and cuDNN autotuning: the run's, then back
        try:
            return _train(cfg, out, device, world, resume=resume, progress=progress and world.is_main)
        except Exception as e:
            failure = compile_failure(e)  # --compile in an environment without a compiler: one line, not a traceback
            if failure is None:
                raise
            raise failure from None


def gpu_speed_hint(device: torch.device, config: dict) -> str | None:
    """One line for a run on a GPU without CUDA graphs: the defaults are true fp32 and eager, by design, and
    several times slower than the options measured on an H100 (docs/speed.md: Speed and precision)."""
    if device.type != "cuda" or config.get("cuda_graphs_used") or config.get("world_size", 1) > 1:
        return None
    return ("speed: --speed exact, training eagerly in true fp32. Measured on an H100, a PreActResNet18 IAT step "
            "takes 94 ms so, 10.7 ms with --speed fast (CUDA graphs, torch.compile, TF32, bf16 autocast and a bf16 "
            "attack); see Speed and precision in docs/speed.md")


def _train(cfg: TrainConfig, out: Path, device: torch.device, world: World, *, resume: bool, progress: bool) -> Path:
    prior = world.on_main(lambda: find_prior(cfg, out, resume))  # rank 0 reads --out, every rank gets it
    if prior.complete:
        log.info("%s is already complete (%d epochs); nothing to do", out, cfg.epochs)
        return out
    data = load_training_data(cfg, device, world)  # before any directory is created: a missing data set leaves nothing
    steps_per_epoch = data.steps_per_epoch(cfg.batch_size)
    world.on_main(lambda: check_world(cfg, prior.config, world.size, len(data), device, out))
    state = RunState.create(cfg, device, world)
    objective = make_objective(cfg, state.model)
    if prior.checkpoint is not None:
        state.restore(prior.checkpoint, out / files.CHECKPOINT, steps_per_epoch)

    config = run_config(cfg, device=device, info=data.info, n=len(data), world_size=world.size)
    update, used = make_update(cfg, state, objective, device=device, wrap=world.wrap)
    config = {**config, **used}
    world.on_main(lambda: open_run_dir(out, config, prior, resume))
    log.info("training %s: %s on %s (%d examples), %s, device=%s, %d process(es)", out, cfg.method, cfg.dataset,
             len(data), objective.description, device, world.size)
    hint = gpu_speed_hint(device, config)
    if hint and world.is_main:
        log.info(hint)
    checkpointer = Checkpointer(out, cfg.checkpoint_every, world)
    with SignalGuard(out, lambda: (state.epoch, state.step)) as guard, \
            for_run(out, config, state.epoch * steps_per_epoch + state.step, world.is_main) as track:  # --log
        tally = LossTally(out)
        while state.epoch < cfg.epochs:
            if objective.awp is not None:
                objective.awp.active = state.epoch >= objective.awp.warmup  # --awp-warmup: epochs without it
            signum = run_steps(state, data, update=update, tally=tally, checkpointer=checkpointer, guard=guard,
                               progress=progress, track=track)
            if state.step == steps_per_epoch:  # the epoch is done: record it, checkpoint, then metrics.jsonl
                state.running["loss_sum"], state.running["count"] = world.sum(
                    [state.running["loss_sum"], state.running["count"]])  # the global batch's loss
                row = state.end_epoch()
                log.info("epoch %d/%d  lr %.4g  train_loss %.4f  %.1fs", row["epoch"], cfg.epochs, row["lr"],
                         row["train_loss"], row["seconds"])
                check_overfitting(state, data, checkpointer)  # before the checkpoint: a collapse keeps the last good
                checkpointer.save(state)
                checkpointer.save_metrics(state.metrics)
                track.epoch(row, state.epoch * steps_per_epoch)
            if signum is not None and state.epoch < cfg.epochs:  # (after the last epoch, save the weights)
                if state.step:  # mid-epoch; an epoch's end was checkpointed just above
                    checkpointer.save(state)
                raise TrainingInterrupted(signum, out, state.epoch, state.step)
        if world.size > 1:
            check_ranks_agree(world, state.model)
        checkpointer.save_weights(state.model)
    return out


def load_training_data(cfg: TrainConfig, device: torch.device, world: World) -> TrainData:
    """The training set on every rank. With --download under torchrun, rank 0 alone downloads and extracts it,
    and the others wait for it (on_main is a barrier): ranks writing one folder at once would corrupt it."""
    if cfg.download and world.size > 1:
        world.on_main(lambda: TrainData.load(cfg, torch.device("cpu")) and None)
        cfg = dataclasses.replace(cfg, download=False)
    return TrainData.load(cfg, device)


def run_steps(state: RunState, data: TrainData, *, update: Update, tally: LossTally, checkpointer: Checkpointer,
              guard: SignalGuard, progress: bool, track: RunLog = NO_LOG) -> int | None:
    """The steps of `state.epoch` from `state.step` on, until its end or a signal; checkpoints as asked.
    Each step is `update(x, y)` (the method's loss, backward, optimizer step), then its loss counted on the
    device (`tally`: read back only at progress, checkpoint and epoch-end points).

    Returns the signal that stopped it (any rank's: all ranks stop after the same step), or None.
    """
    cfg, world = state.cfg, state.world
    steps_per_epoch = data.steps_per_epoch(cfg.batch_size)
    state.start_epoch()
    order = epoch_order(cfg.seed, state.epoch, len(data)).to(data.x.device)
    bar = tqdm(total=steps_per_epoch, initial=state.step, desc=f"epoch {state.epoch + 1}/{cfg.epochs}",
               disable=None if progress else True, leave=False, unit="batch")
    started, signum = time.perf_counter(), None
    shard = world.shard if world.size > 1 else None
    for x, y, share in data.batches(order, state.step, cfg.batch_size, shard):
        loss = update(x, y, share * world.size)  # share * N: this rank's weight in DDP's average (see Step)
        if state.ema is not None:
            state.ema.update(state.model)  # eager, after the (possibly graphed) update
        tally.add(state, loss, len(x))
        guard.step_done()
        bar.update(1)
        if (not bar.disable or track.active) and state.step % POSTFIX_EVERY == 0:  # reading the loss syncs
            loss = tally.sync(state)
            bar.set_postfix(loss=f"{loss:.3f}")
            track.step(state.epoch * steps_per_epoch + state.step, loss, state.optimizer.param_groups[0]["lr"])
        signum = world.agree_stop(guard.signum)
        if signum is not None:
            break
        if checkpointer.due(state, steps_per_epoch):
            state.running["seconds"] += time.perf_counter() - started
            started = time.perf_counter()
            tally.sync(state)  # raises if a loss was not finite: nothing non-finite is saved
            checkpointer.save(state)
    tally.sync(state)
    bar.close()
    state.running["seconds"] += time.perf_counter() - started
    return signum


def check_ranks_agree(world: World, model: torch.nn.Module) -> None:
    """Every rank ends with the same weights (DDP's promise), checked before rank 0 saves them."""
    digests = world.digests(model)
    if len(set(digests)) > 1:
        raise TrainingError(f"the ranks' weights differ at the end (sha256 {', '.join(d[:12] for d in digests)}); "
                            "this is a bug: please report it with the command")
    log.info("all %d ranks hold the same weights (sha256 %s)", world.size, digests[0])


def check_world(cfg: TrainConfig, saved_config: dict | None, world_size: int, n: int, device: torch.device,
                out: Path) -> None:
    """What a run on `world_size` processes needs: the world it started with, a batch for every rank."""
    check_same_data(saved_config, n, out)
    saved = (saved_config or {}).get("world_size", 1)
    if saved_config is not None and saved != world_size:
        raise UsageError(f"the run in {out} was trained on {saved} process(es) (world_size in its config.json), "
                         f"this is {world_size}: resume it with torchrun --nproc_per_node {saved} (the same "
                         "world size), or start a new run")
    smallest = smallest_batch(n, cfg.batch_size)
    if world_size > 1 and smallest < world_size:
        raise UsageError(f"--batch-size {cfg.batch_size} on {n} examples leaves a batch of {smallest}, fewer than "
                         f"the {world_size} processes; every rank needs an example of every batch: choose "
                         "another --batch-size or --train-size")
    if world_size > 1 and cfg.sync_bn and device.type != "cuda":
        raise UsageError("--sync-bn needs CUDA GPUs (torch's SyncBatchNorm has no CPU kernel); drop it on the CPU")


def smallest_batch(n: int, batch_size: int) -> int:
    """The smallest batch of an epoch of `n` examples, as TrainData.batches cuts it (a last batch of one
    joins the batch before it)."""
    if n <= batch_size:
        return n
    rest = n % batch_size
    return batch_size if rest in (0, 1) else rest


def check_same_data(saved_config: dict | None, n: int, out: Path) -> None:
    """A resumed run must see the training set it started with."""
    if saved_config is not None and saved_config.get("n_train", n) != n:
        raise UsageError(f"the training set has {n} examples but the run in {out} was started with "
                         f"{saved_config['n_train']}; resume with the data it was trained on (--data-dir)")
