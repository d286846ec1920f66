"""The training loop: one method, one model, SGD with step decay, a checkpoint you can resume.

Resuming is exact: the data order of an epoch comes from a generator seeded by (seed, epoch), and
everything else random (augmentation, mixing, attack starts) from the global RNGs, whose states
the checkpoint stores. So a resumed run continues the same sequence of updates.
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


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# ------------------------------------------------------------------------------------------- setup


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
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
    return cfg.lr * cfg.lr_gamma ** sum(epoch >= m for m in cfg.resolved_milestones())


def rng_state() -> dict:
    state = {
        "python": list(random.getstate()[1]),
        "python_pos": random.getstate()[2] if random.getstate()[2] is not None else -1,
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    gauss = None if state["python_pos"] == -1 else state["python_pos"]
    random.setstate((3, tuple(state["python"]), gauss))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------ resume


def prepare_run_dir(cfg: TrainConfig, out: Path, resume: bool) -> dict | None:
    """Check `out` against `resume`; return the checkpoint to resume from (or None)."""
    if not resume:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UsageError(f"--out {out} already exists and is not empty; pass --resume to continue it, "
                             "or choose another directory")
        return None
    if not (out / runio.CONFIG).is_file():
        return None  # killed before it wrote anything: start afresh
    saved = runio.read_json(out / runio.CONFIG)
    diff = [k for k in RESUME_KEYS if saved.get(k) != cfg.to_dict().get(k)]
    if diff:
        k = diff[0]
        raise UsageError(f"--resume: {k} is {cfg.to_dict().get(k)!r} but the run in {out} used "
                         f"{saved.get(k)!r}; resume with the same options")
    if (out / runio.CHECKPOINT).is_file():
        return runio.load_checkpoint(out / runio.CHECKPOINT)
    return None


def is_complete(cfg: TrainConfig, out: Path) -> bool:
    if not (out / runio.WEIGHTS).is_file() or not (out / runio.CHECKPOINT).is_file():
        return False
    ckpt = runio.load_checkpoint(out / runio.CHECKPOINT)
    return ckpt.get("epoch", 0) >= cfg.epochs


# ---------------------------------------------------------------------------------------- training


def train(cfg: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Train one run into `out` (see interfaces.md for its files); return the run directory."""
    cfg.validate()
    out = Path(out)
    device = resolve_device(cfg.device)
    if resume and out.is_dir() and is_complete(cfg, out):
        log.info("%s is already complete (%d epochs); nothing to do", out, cfg.epochs)
        return out
    ckpt = prepare_run_dir(cfg, out, resume)

    # Data before any directory is created, so a missing data set leaves nothing behind.
    info = dataset_info(cfg.dataset)
    x_train, y_train = load_data(cfg.dataset, "train", cfg.data_dir, limit=cfg.train_size)
    x_train, y_train = x_train.to(device), y_train.to(device)
    n = len(x_train)
    steps_per_epoch = math.ceil(n / cfg.batch_size)

    out.mkdir(parents=True, exist_ok=True)
    config = {**cfg.to_dict(), "iat_version": iat.__version__, "torch_version": torch.__version__,
              "in_channels": info.in_channels, "num_classes": info.num_classes, "image_size": info.image_size,
              "n_train": n}
    if not resume or not (out / runio.CONFIG).is_file():
        runio.write_json(out / runio.CONFIG, config)

    seed_everything(cfg.seed)
    model = build_model(cfg).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    spec = get_method(cfg.method)
    mix = make_mix(spec, cfg.mixup_alpha, cfg.manifold_alpha, cfg.lam_per, model.mix_layers)
    attack = PGD(model, cfg.eps, cfg.step_size, cfg.attack_steps, bn_mode=cfg.attack_bn) if spec.adversarial else None
    loss_fn = make_loss_fn(spec, mix, attack)
    log.info("training %s: %s on %s (%d examples), mix=%r, attack=%r, device=%s",
             out, cfg.method, cfg.dataset, n, mix, attack, device)

    epoch, step, metrics, running = 0, 0, [], {"loss_sum": 0.0, "count": 0, "seconds": 0.0}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        epoch, step, metrics, running = ckpt["epoch"], ckpt["step"], ckpt["metrics"], ckpt["running"]
        set_rng_state(ckpt["rng"])
        log.info("resuming %s at epoch %d, step %d", out, epoch, step)

    def checkpoint() -> None:
        runio.save_checkpoint(out / runio.CHECKPOINT, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step,
            "metrics": metrics, "running": dict(running), "rng": rng_state(), "config": cfg.to_dict()})

    interrupted = []
    previous_handler = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):  # finish the current step, then checkpoint and stop
        interrupted.append(signum)

    try:
        signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: Ctrl-C handling stays the caller's
        previous_handler = None

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
                    raise TrainingDiverged(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                                           "the last good checkpoint is kept (try a lower --lr)")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                running["loss_sum"] += loss.item() * len(idx)
                running["count"] += len(idx)
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{running['loss_sum'] / running['count']:.3f}")
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < steps_per_epoch:
                    running["seconds"] += time.perf_counter() - started
                    started = time.perf_counter()
                    checkpoint()
                if interrupted:
                    break
            bar.close()
            running["seconds"] += time.perf_counter() - started
            if interrupted:
                checkpoint()
                raise KeyboardInterrupt
            metrics.append({"epoch": epoch + 1, "lr": lr_at(cfg, epoch),
                            "train_loss": running["loss_sum"] / max(running["count"], 1),
                            "seconds": round(running["seconds"], 3)})
            log.info("epoch %d/%d  lr %.4g  train_loss %.4f  %.1fs", epoch + 1, cfg.epochs, metrics[-1]["lr"],
                     metrics[-1]["train_loss"], metrics[-1]["seconds"])
            epoch, step, running = epoch + 1, 0, {"loss_sum": 0.0, "count": 0, "seconds": 0.0}
            runio.write_jsonl(out / runio.METRICS, metrics)
            checkpoint()
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)

    runio.save_weights(out / runio.WEIGHTS, model.state_dict())
    return out
