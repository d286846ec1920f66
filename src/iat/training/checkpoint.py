"""The run directory and its files: config.json once, then checkpoints, metrics and the final weights.

Every write is atomic (iat.rundir.files): a write that fails (a full disk) raises CheckpointWriteError and
leaves the previous file intact; weights that became NaN or infinite are never checkpointed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from iat.config import SPEED_KEYS, TrainConfig
from iat.data import DataInfo
from iat.distributed import SINGLE, World
from iat.errors import UsageError
from iat.rundir import files, outdir, tensors
from iat.training.ema import EMA_WEIGHTS
from iat.training.faults import CheckpointWriteError, diverged
from iat.training.resume import Prior
from iat.training.state import RunState, device_name
from iat.version import __version__

log = logging.getLogger("iat.train")


def run_config(cfg: TrainConfig, *, device: torch.device, info: DataInfo, n: int, world_size: int = 1) -> dict:
    """config.json: the options plus what the run was made with (versions, processes, threads per process,
    data shape)."""
    return {**cfg.to_dict(), "iat_version": __version__, "torch_version": torch.__version__,
            "world_size": world_size, "torch_threads": torch.get_num_threads(), "device_resolved": str(device),
            "device_name": device_name(device),
            "in_channels": info.in_channels, "num_classes": info.num_classes, "image_size": info.image_size,
            "n_train": n, **({"data_sha256": info.fingerprint} if info.fingerprint else {})}


def open_run_dir(out: Path, config: dict, prior: Prior, resume: bool) -> None:
    """Create `out` and write config.json (a new run), or tidy it for a resumed one."""
    if prior.config is not None and prior.checkpoint is not None:
        check_same_data(out, prior.config, config)
    created = not out.exists()
    outdir.make_dir(out)
    if resume:
        for p in files.clean_temp_files(out):
            log.info("removed %s, left by an interrupted write", p)
    # A resumed run with no checkpoint trains from scratch: its config.json must describe this start, not an
    # attempt that wrote nothing else (a --compile that failed before the first checkpoint would stay recorded).
    if prior.config is None or prior.checkpoint is None:
        try:
            files.write_json(out / files.CONFIG, config)
        except OSError as e:
            if created:
                out.rmdir()
            raise CheckpointWriteError(f"could not write {out / files.CONFIG} ({e.strerror or e}); "
                                       "free space or choose another --out") from None
    else:
        for key in ("torch_version", "torch_threads"):
            if key in prior.config and prior.config[key] != config[key]:
                log.warning("%s was trained with %s=%s, this process has %s: the resumed run is valid but may "
                            "not be bit-identical to an uninterrupted one", out, key, prior.config[key], config[key])
        record_speed_changes(out, config, prior)
    if prior.checkpoint is not None:
        files.write_jsonl(out / files.METRICS, prior.checkpoint["metrics"])  # drop rows written after it
        log.info("resuming %s at epoch %d, step %d", out, prior.checkpoint["epoch"] + 1, prior.checkpoint["step"])
    elif resume:
        log.info("nothing to resume in %s: starting the run", out)


def check_same_data(out: Path, saved: dict, config: dict) -> None:
    """A resumed run must train on the images it started with: the same count is not enough (two copies of a
    data set, a --data-dir forgotten on resume). A run from before data_sha256 was recorded is not checked."""
    before, now = saved.get("data_sha256"), config.get("data_sha256")
    if before is None or now is None or before == now:
        return
    where = saved.get("data_dir")
    hint = f"--data-dir {where}" if isinstance(where, str) else "no --data-dir, as it was started"
    raise UsageError(f"--resume {out}: the training data differ from the data the run started with (sha256 "
                     f"{str(before)[:12]}..., now {now[:12]}...); resume with the data it was trained on ({hint})")


def record_speed_changes(out: Path, config: dict, prior: Prior) -> None:
    """A resumed run may change the speed options (SPEED_KEYS: rounding and launches, not arithmetic):
    say so in one warning and append the change to config.json's `resumes`, so the file still tells
    what trained each part of the run."""
    defaults = TrainConfig().to_dict()
    last = {k: prior.config.get(k, defaults[k]) for k in SPEED_KEYS}  # what the latest part ran with
    for resumed in prior.config.get("resumes", []):
        last.update(resumed.get("changed", {}))
    changed = {k: config[k] for k in SPEED_KEYS if last[k] != config[k]}
    if not changed:
        return
    where = {"epoch": prior.checkpoint["epoch"] + 1, "step": prior.checkpoint["step"]}  # 1-based, as metrics.jsonl
    log.warning("%s: resumed at epoch %d, step %d with %s (the run so far: %s): the same arithmetic in "
                "another rounding, so not bit-identical to an uninterrupted run; recorded in config.json's "
                "`resumes`", out, where["epoch"], where["step"],
                ", ".join(f"{k}={v}" for k, v in changed.items()), ", ".join(f"{k}={last[k]}" for k in changed))
    updated = {**prior.config, "resumes": [*prior.config.get("resumes", []), {**where, "changed": changed}]}
    try:
        files.write_json(out / files.CONFIG, updated)
    except OSError as e:
        raise CheckpointWriteError(f"could not write {out / files.CONFIG} ({e.strerror or e}); free space, then "
                                   "resume again") from None
    prior.config = updated


class Checkpointer:
    """Writes a run's checkpoint.pt, metrics.jsonl and model.safetensors into `out`.

    Under torchrun every rank calls each method; rank 0 writes, and its error stops every rank.
    """

    def __init__(self, out: Path, checkpoint_every: int = 0, world: World = SINGLE):
        self.out, self.every, self.world = out, checkpoint_every, world

    def due(self, state: RunState, steps_per_epoch: int) -> bool:
        """Every `checkpoint_every` steps counted over the run; an epoch's end is checkpointed anyway."""
        global_step = state.epoch * steps_per_epoch + state.step
        return bool(self.every) and global_step % self.every == 0 and state.step < steps_per_epoch

    def _write(self, name: str, save: Callable[[Path, Any], None], content: Any) -> None:
        self.world.on_main(lambda: self._write_here(name, save, content))

    def _write_here(self, name: str, save: Callable[[Path, Any], None], content: Any) -> None:
        path = self.out / name
        try:
            save(path, content)
        except OSError as e:
            raise CheckpointWriteError(
                f"could not write {path} ({e.strerror or e}); the previous checkpoint is intact: "
                "free space, then continue with the same command plus --resume") from None

    def save(self, state: RunState) -> None:
        if not state.weights_finite():
            raise diverged("the weights became NaN or infinite", self.out, state.epoch, state.step)
        if state.ema is not None and state.epoch == state.cfg.epochs and not state.step:
            # before the last checkpoint: a run killed between the two resumes from the one before and writes it
            self.world.on_main(lambda: self._write_here(EMA_WEIGHTS, tensors.save_weights, ema_weights(state)))
        self._write(files.CHECKPOINT, tensors.save_checkpoint, state.checkpoint())

    def save_metrics(self, metrics: list[dict]) -> None:
        self._write(files.METRICS, files.write_jsonl, metrics)

    def save_weights(self, model: torch.nn.Module) -> None:
        self._write(files.WEIGHTS, tensors.save_weights, model.state_dict())


def ema_weights(state: RunState) -> dict[str, torch.Tensor]:
    """The averaged model's weights and its own BatchNorm statistics (iat.training.ema), on the CPU."""
    return {k: v.detach().cpu() for k, v in state.ema.averaged_model(state.cfg, state.model).state_dict().items()}
