"""The training loop: one method, one model, SGD with step decay, a checkpoint you can resume.

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
"""

from __future__ import annotations

import logging
import math
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import iat
from iat import runio
from iat.attacks import PGD
from iat.config import RESUME_KEYS, TrainConfig
from iat.data import augment, dataset_info, load_data
from iat.errors import UsageError
from iat.methods import get_method, make_loss_fn, make_mix
from iat.models import MixableNet, create_model

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training stopped for a reason that is not bad input; the message says why and what to do.

    `iat train` prints it on one line and exits with code 1.
    """


class TrainingDiverged(TrainingError):
    """The loss or the weights became NaN or infinite; the last good checkpoint is kept."""


class CheckpointWriteError(TrainingError):
    """A checkpoint or the final weights could not be written (e.g. a full disk); the previous
    checkpoint is intact."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training; a checkpoint was written unless `saved` is False."""

    def __init__(self, signum: int, out: Path, epoch: int, step: int, saved: bool = True):
        super().__init__(f"{signal.Signals(signum).name} at epoch {epoch + 1}, step {step}")
        self.signum, self.out, self.epoch, self.step, self.saved = signum, out, epoch, step, saved


# ------------------------------------------------------------------------------------------- setup


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"--device {name!r}: choose one of auto, cpu, cuda")
    return torch.device(name)


def build_model(cfg: TrainConfig) -> MixableNet:
    """The model a config describes (no weights loaded)."""
    info = dataset_info(cfg.dataset)
    kwargs = {}
    if cfg.width is not None:
        kwargs["widen" if cfg.arch == "wrn28-10" else "width"] = cfg.width
    if cfg.arch == "mlp6":
        kwargs["input_size"] = info.image_size
    return create_model(cfg.arch, info.in_channels, info.num_classes, info.mean, info.std, **kwargs)


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


def rng_state() -> dict:
    """The global RNG states as tensors and plain values (loadable with weights_only=True)."""
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
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def upgrade_rng_state(state: dict) -> dict:
    """Read the RNG state of checkpoints written before 0.1.0's format (a list and `python_pos`)."""
    if "python_pos" in state and "python_gauss" not in state:
        state = {**state, "python": torch.as_tensor(state["python"], dtype=torch.int64),
                 "python_gauss": None if state["python_pos"] == -1 else state["python_pos"],
                 "numpy_has_gauss": 0, "numpy_gauss": 0.0}
    return state


def set_rng_state(state: dict) -> None:
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------ resume

CHECKPOINT_KEYS = {"model": dict, "optimizer": dict, "epoch": int, "step": int, "metrics": list,
                   "running": dict, "rng": dict, "config": dict}
RNG_KEYS = ("python", "python_gauss", "numpy", "numpy_pos", "numpy_has_gauss", "numpy_gauss", "torch")


def _as_option(value) -> str:
    if value is None:
        return "(not given)"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def _first_difference(cfg: TrainConfig, saved: dict) -> str | None:
    """'--epochs 5 differs from ...' for the first option that decides the weights and differs."""
    current = cfg.to_dict()
    for k in RESUME_KEYS:
        if saved.get(k) != current.get(k):
            flag = "--milestones (as resolved from --epochs)" if k == "milestones_resolved" else \
                "--" + k.replace("_", "-")
            return (f"{flag} {_as_option(current.get(k))} differs from the run's {_as_option(saved.get(k))}; "
                    "resume with the options the run was started with (see its config.json)")
    return None


def _is_empty(out: Path) -> bool:
    """No files in `out` but temporary files a killed write left behind."""
    temps = set(runio.temp_files(out))
    return all(p in temps for p in out.iterdir())


def _check_resumable(cfg: TrainConfig, out: Path) -> dict | None:
    """Validate `out` for --resume without changing anything; return its config.json (None: start afresh)."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory; choose another --out")
    if not (out / runio.CONFIG).is_file():
        if _is_empty(out):
            return None  # killed before config.json was written: start afresh
        raise UsageError(f"--out {out} is not a run directory of `iat train` (no {runio.CONFIG}); "
                         "choose another --out, or drop --resume to train into a new directory")
    saved = runio.read_json(out / runio.CONFIG)
    if not isinstance(saved, dict):
        raise UsageError(f"{out / runio.CONFIG} is not an iat run configuration; the file is damaged")
    diff = _first_difference(cfg, saved)
    if diff:
        raise UsageError(f"--resume {out}: {diff}")
    return saved


def _check_checkpoint(cfg: TrainConfig, path: Path, ckpt: dict) -> dict:
    """Refuse a checkpoint that is not one of this run's, with a one-line UsageError."""
    fix = f"delete {path} to restart the run from scratch"
    for key, kind in CHECKPOINT_KEYS.items():
        if not isinstance(ckpt.get(key), kind) or isinstance(ckpt.get(key), bool):
            raise UsageError(f"{path} is not an iat checkpoint ({key!r} is missing or malformed); {fix}")
    ckpt["rng"] = upgrade_rng_state(ckpt["rng"])
    missing = [f"rng.{k}" for k in RNG_KEYS if k not in ckpt["rng"]]
    missing += [f"running.{k}" for k in ("loss_sum", "count", "seconds") if k not in ckpt["running"]]
    if missing:
        raise UsageError(f"{path} is not an iat checkpoint (no {missing[0]}); {fix}")
    diff = _first_difference(cfg, ckpt["config"])
    if diff:
        raise UsageError(f"{path} belongs to another run: {diff}")
    if not 0 <= ckpt["epoch"] <= cfg.epochs or ckpt["step"] < 0:
        raise UsageError(f"{path} is at epoch {ckpt['epoch']}, step {ckpt['step']}, outside this run; {fix}")
    return ckpt


def is_complete(cfg: TrainConfig, out: str | Path) -> bool:
    """True if `out` holds this configuration's finished run (its final weights are written).

    Raises UsageError if `out` holds a run with other options.
    """
    out = Path(out)
    saved = _check_resumable(cfg, out)
    return saved is not None and (out / runio.WEIGHTS).is_file()


def _check_new_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"--out {out} already exists and is not empty; pass --resume to continue it, "
                         "or choose another directory")
    runio.check_out_dir(out)


# ---------------------------------------------------------------------------------------- training


def train(cfg: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Train one run into `out` (see interfaces.md for its files); return the run directory.

    With `resume`, continue the run in `out` from its checkpoint (or start it if there is none);
    a finished run is left as it is. Everything that can be checked is checked before any file or
    directory is created: bad input raises UsageError and leaves the file system unchanged.
    """
    cfg.validate()
    out = Path(out)
    device = resolve_device(cfg.device)
    saved_config, ckpt = None, None
    if resume:
        saved_config = _check_resumable(cfg, out)
        if saved_config is not None and (out / runio.WEIGHTS).is_file():
            log.info("%s is already complete (%d epochs); nothing to do", out, cfg.epochs)
            return out
        if saved_config is not None and (out / runio.CHECKPOINT).is_file():
            ckpt = _check_checkpoint(cfg, out / runio.CHECKPOINT, runio.load_checkpoint(out / runio.CHECKPOINT))
    else:
        _check_new_out(out)

    # Data before any directory is created, so a missing data set leaves nothing behind.
    info = dataset_info(cfg.dataset)
    x_train, y_train = load_data(cfg.dataset, "train", cfg.data_dir, limit=cfg.train_size,
                                 download=cfg.download)
    x_train, y_train = x_train.to(device), y_train.to(device)
    n = len(x_train)
    steps_per_epoch = math.ceil(n / cfg.batch_size)

    seed_everything(cfg.seed)
    model = build_model(cfg).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    spec = get_method(cfg.method)
    mix = make_mix(spec, cfg.mixup_alpha, cfg.manifold_alpha, cfg.lam_per, model.mix_layers)
    attack = PGD(model, cfg.eps, cfg.step_size, cfg.attack_steps, bn_mode=cfg.attack_bn) if spec.adversarial else None
    loss_fn = make_loss_fn(spec, mix, attack)

    if saved_config is not None and saved_config.get("n_train", n) != n:
        raise UsageError(f"the training set has {n} examples but the run in {out} was started with "
                         f"{saved_config['n_train']}; resume with the data it was trained on (--data-dir)")
    epoch, step, metrics, running = 0, 0, [], {"loss_sum": 0.0, "count": 0, "seconds": 0.0}
    if ckpt is not None:
        path = out / runio.CHECKPOINT
        if ckpt["step"] > steps_per_epoch:
            raise UsageError(f"{path} is at step {ckpt['step']} of an epoch of {steps_per_epoch} steps; "
                             f"delete {path} to restart the run from scratch")
        for part, restore in (("weights", lambda: model.load_state_dict(ckpt["model"])),
                              ("optimizer state", lambda: optimizer.load_state_dict(ckpt["optimizer"])),
                              ("RNG state", lambda: set_rng_state(ckpt["rng"]))):
            try:
                restore()
            except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as e:
                first = " ".join((str(e).strip().splitlines() or [type(e).__name__])[:2])[:150]
                raise UsageError(f"{path} cannot be restored: its {part} failed to load into this run's "
                                 f"{cfg.arch!r} model ({first}); delete {path} to restart the run "
                                 "from scratch") from None
        epoch, step, metrics, running = ckpt["epoch"], ckpt["step"], ckpt["metrics"], ckpt["running"]

    # ---- from here on the run directory is created and written
    config = {**cfg.to_dict(), "iat_version": iat.__version__, "torch_version": torch.__version__,
              "torch_threads": torch.get_num_threads(), "device_resolved": str(device),
              "in_channels": info.in_channels, "num_classes": info.num_classes, "image_size": info.image_size,
              "n_train": n}
    created = not out.exists()
    runio.make_dir(out)
    if resume:
        for p in runio.clean_temp_files(out):
            log.info("removed %s, left by an interrupted write", p)
    if saved_config is None:
        try:
            runio.write_json(out / runio.CONFIG, config)
        except OSError as e:
            if created:
                out.rmdir()
            raise CheckpointWriteError(f"could not write {out / runio.CONFIG} ({e.strerror or e}); "
                                      "free space or choose another --out") from None
    else:
        for key in ("torch_version", "torch_threads"):
            if key in saved_config and saved_config[key] != config[key]:
                log.warning("%s was trained with %s=%s, this process has %s: the resumed run is valid but may "
                            "not be bit-identical to an uninterrupted one", out, key, saved_config[key], config[key])
    if ckpt is not None:
        runio.write_jsonl(out / runio.METRICS, metrics)  # drop rows written after the checkpoint
        log.info("resuming %s at epoch %d, step %d", out, epoch + 1, step)
    elif resume:
        log.info("nothing to resume in %s: starting the run", out)
    log.info("training %s: %s on %s (%d examples), mix=%r, attack=%r, device=%s",
             out, cfg.method, cfg.dataset, n, mix, attack, device)

    def weights_finite() -> bool:
        return all(bool(torch.isfinite(p).all()) for p in model.parameters())

    def write(path: Path, fn, content) -> None:  # fn(path, content), atomic; OSError -> CheckpointWriteError
        try:
            fn(path, content)
        except OSError as e:
            raise CheckpointWriteError(
                f"could not write {path} ({e.strerror or e}); the previous checkpoint is intact: "
                "free space, then continue with the same command plus --resume") from None

    def checkpoint() -> None:
        if not weights_finite():
            raise TrainingDiverged(f"the weights became NaN or infinite at epoch {epoch + 1}, step {step}; "
                                   f"the last good checkpoint in {out} is kept; start a new run with a lower --lr")
        write(out / runio.CHECKPOINT, runio.save_checkpoint, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step,
            "metrics": metrics, "running": dict(running), "rng": rng_state(), "config": cfg.to_dict()})

    signals = []
    previous = {}

    def on_signal(signum, frame):  # finish the current step, then checkpoint and stop
        if signals:  # asked twice: stop now, the last checkpoint stays as it is
            raise TrainingInterrupted(signum, out, epoch, step, saved=False)
        signals.append(signum)
        log.info("%s: finishing this step, then writing a checkpoint (again to stop at once)",
                    signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not the main thread: signals stay the caller's business
            break

    try:
        while epoch < cfg.epochs:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(cfg, epoch)
            order = epoch_order(cfg.seed, epoch, n).to(device)
            model.train()
            bar = tqdm(total=steps_per_epoch, initial=step, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       disable=None if progress else True, leave=False, unit="batch")
            started = time.perf_counter()
            while step < steps_per_epoch:
                idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                x = augment(x_train[idx], info.crop_pad, info.flip)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda"):
                    loss, _ = loss_fn(model, x, y_train[idx])
                if not torch.isfinite(loss):
                    raise TrainingDiverged(f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                                           f"the last good checkpoint in {out} is kept; start a new run with a "
                                           "lower --lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                running["loss_sum"] += loss.item() * len(idx)
                running["count"] += len(idx)
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{running['loss_sum'] / running['count']:.3f}")
                if signals:
                    break
                global_step = epoch * steps_per_epoch + step
                if cfg.checkpoint_every and global_step % cfg.checkpoint_every == 0 and step < steps_per_epoch:
                    running["seconds"] += time.perf_counter() - started
                    started = time.perf_counter()
                    checkpoint()
            bar.close()
            running["seconds"] += time.perf_counter() - started
            if step == steps_per_epoch:  # the epoch is done: record it, checkpoint, then metrics.jsonl
                metrics.append({"epoch": epoch + 1, "lr": lr_at(cfg, epoch),
                                "train_loss": running["loss_sum"] / max(running["count"], 1),
                                "seconds": round(running["seconds"], 3)})
                log.info("epoch %d/%d  lr %.4g  train_loss %.4f  %.1fs", epoch + 1, cfg.epochs,
                         metrics[-1]["lr"], metrics[-1]["train_loss"], metrics[-1]["seconds"])
                epoch, step, running = epoch + 1, 0, {"loss_sum": 0.0, "count": 0, "seconds": 0.0}
                checkpoint()
                write(out / runio.METRICS, runio.write_jsonl, metrics)
            if signals and epoch < cfg.epochs:  # (after the last epoch, just write the weights)
                if step:  # mid-epoch; an epoch's end was checkpointed just above
                    checkpoint()
                raise TrainingInterrupted(signals[0], out, epoch, step)
        write(out / runio.WEIGHTS, runio.save_weights, model.state_dict())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return out
