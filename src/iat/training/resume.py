"""What is in `--out` before training starts: nothing, this run's checkpoint, or a finished run.

Everything here only reads: bad input raises a one-line UsageError and leaves the file system as it is.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from iat.config import RESUME_KEYS, SPEED_KEYS, TrainConfig, old_switch
from iat.errors import UsageError
from iat.rundir import files, outdir, tensors

log = logging.getLogger("iat.train")

CHECKPOINT_KEYS = {"model": dict, "optimizer": dict, "epoch": int, "step": int, "metrics": list,
                   "running": dict, "rng": dict, "config": dict}
RNG_KEYS = ("python", "python_gauss", "numpy", "numpy_pos", "numpy_has_gauss", "numpy_gauss", "torch")


def _as_option(value) -> str:
    if value is None:
        return "(not given)"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def first_difference(cfg: TrainConfig, saved: dict) -> str | None:
    """'--epochs 5 differs from ...' for the first option that decides the weights and differs.

    A key the saved config lacks was written before that option existed: the run used its default; a switch
    saved as "on"/"off" (0.1.0) compares as True/False."""
    current, defaults = cfg.to_dict(), TrainConfig().to_dict()
    for k in RESUME_KEYS:
        if old_switch(k, saved.get(k, defaults.get(k))) != current.get(k):
            flag = "--milestones (as resolved from --epochs)" if k == "milestones_resolved" else \
                "--" + k.replace("_", "-")
            return (f"{flag} {_as_option(current.get(k))} differs from the run's {_as_option(saved.get(k))}; "
                    "resume with the options the run was started with (see its config.json)")
    return None


def check_resumable(cfg: TrainConfig, out: Path) -> dict | None:
    """Validate `out` for --resume without changing anything; return its config.json (None: start afresh)."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory; choose another --out")
    if not (out / files.CONFIG).is_file():
        if files.is_empty(out):
            return None  # killed before config.json was written: start afresh
        raise UsageError(f"--out {out} is not a run directory of `iat train` (no {files.CONFIG}); "
                         "choose another --out, or drop --resume to train into a new directory")
    saved = files.read_json(out / files.CONFIG)
    if not isinstance(saved, dict):
        raise UsageError(f"{out / files.CONFIG} is not an iat run configuration; the file is damaged")
    diff = first_difference(cfg, saved)
    if diff:
        raise UsageError(f"--resume {out}: {diff}")
    why = resumes_damage(saved.get("resumes", []))
    if why:
        raise UsageError(f"{out / files.CONFIG}: `resumes` {why}; the file is damaged: restore it, or remove "
                         "the `resumes` entry if you edited it")
    return upgraded(saved)


def upgraded(saved: dict) -> dict:
    """An older run's config.json as this release writes it: a switch's "on"/"off" as a boolean, in `resumes`
    too, so that the speed options of every release compare alike (iat.training.checkpoint.record_speed_changes)."""
    saved = {k: old_switch(k, v) for k, v in saved.items()}
    if "resumes" in saved:
        saved["resumes"] = [{**r, "changed": {k: old_switch(k, v) for k, v in r["changed"].items()}}
                            for r in saved["resumes"]]
    return saved


def resumes_damage(resumes) -> str | None:
    """Why config.json's `resumes` is not the list training appends to (None if it is): a list of
    {"epoch": int, "step": int, "changed": {speed option: value}}."""
    if not isinstance(resumes, list):
        return f"is {_show(resumes)}, not a list"
    for i, entry in enumerate(resumes):
        if not isinstance(entry, dict) or not isinstance(entry.get("changed"), dict):
            return f"entry {i + 1} is {_show(entry)}, not a table with `changed` options"
        for key in ("epoch", "step"):
            if isinstance(entry.get(key), bool) or not isinstance(entry.get(key), int):
                return f"entry {i + 1} has {key} {_show(entry.get(key))}, not a whole number"
        odd = [k for k in entry["changed"] if k not in SPEED_KEYS]
        if odd:
            return f"entry {i + 1} changes {_show(odd[0])}, which is not a speed option ({', '.join(SPEED_KEYS)})"
    return None


def check_checkpoint(cfg: TrainConfig, path: Path, ckpt: dict) -> dict:
    """Refuse a checkpoint that is not one of this run's, with a one-line UsageError."""
    fix = f"delete {path} to restart the run from scratch"
    for key, kind in CHECKPOINT_KEYS.items():
        if not isinstance(ckpt.get(key), kind) or isinstance(ckpt.get(key), bool):
            raise UsageError(f"{path} is not an iat checkpoint ({key!r} is missing or malformed); {fix}")
    missing = [f"rng.{k}" for k in RNG_KEYS if k not in ckpt["rng"]]
    missing += [f"running.{k}" for k in ("loss_sum", "count", "seconds") if k not in ckpt["running"]]
    if missing:
        raise UsageError(f"{path} is not an iat checkpoint (no {missing[0]}); {fix}")
    diff = first_difference(cfg, ckpt["config"])
    if diff:
        raise UsageError(f"{path} belongs to another run: {diff}")
    if not 0 <= ckpt["epoch"] <= cfg.epochs or ckpt["step"] < 0:
        raise UsageError(f"{path} is at epoch {ckpt['epoch']}, step {ckpt['step']}, outside this run; {fix}")
    return ckpt


def is_complete(cfg: TrainConfig, out: str | Path) -> bool:
    """True if `out` holds this configuration's finished run (its final weights are written and load).

    Raises UsageError if `out` holds a run with other options.
    """
    out = Path(out)
    saved = check_resumable(cfg, out)
    return saved is not None and (out / files.WEIGHTS).is_file() and weights_damage(cfg, out) is None


def weights_damage(cfg: TrainConfig, out: Path) -> str | None:
    """Why `out`'s final weights cannot be used (a one-line message), or None if they load into `cfg`'s model.

    A file that loads but lacks a tensor, has an extra one or one of another dtype is damage too: it is no
    finished run, and a final checkpoint can rebuild it."""
    from iat.rundir.read import weights_mismatch  # it imports the data and model modules: only when needed

    try:
        state = tensors.load_weights(out / files.WEIGHTS)
    except UsageError as e:
        return str(e).split("; ", 1)[0]
    mismatch = weights_mismatch(cfg, state)
    return f"{out / files.WEIGHTS} does not fit the run's model ({mismatch})" if mismatch else None


def check_new_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory; choose another --out")
    if out.is_dir() and not files.is_empty(out):
        raise UsageError(f"--out {out} already exists and is not empty; pass --resume to continue it, "
                         "or choose another directory")
    outdir.check_out_dir(out)


@dataclass
class Prior:
    """What `--out` already holds for this run: its config.json, its checkpoint, whether it is finished."""

    config: dict | None = None
    checkpoint: dict | None = None
    complete: bool = False


def find_prior(cfg: TrainConfig, out: Path, resume: bool) -> Prior:
    """Check `out` for a new run, or read what a resumed run continues from."""
    for name in (files.CONFIG, files.METRICS, files.CHECKPOINT, files.WEIGHTS):
        if (out / name).exists() and not (out / name).is_file():
            raise UsageError(f"{out / name} is a directory (or another non-file), not the run's {name}; "
                             "remove it, or choose another --out")
    if not resume:
        check_new_out(out)
        return Prior()
    saved = check_resumable(cfg, out)
    damage = weights_damage(cfg, out) if saved is not None and (out / files.WEIGHTS).is_file() else None
    if saved is not None and (out / files.WEIGHTS).is_file() and damage is None:
        return Prior(saved, complete=True)
    ckpt = None
    if saved is not None and (out / files.CHECKPOINT).is_file():
        ckpt = check_checkpoint(cfg, out / files.CHECKPOINT, tensors.load_checkpoint(out / files.CHECKPOINT))
    if damage is not None:
        check_rebuildable(cfg, out, damage, ckpt)
    return Prior(saved, ckpt)


def check_rebuildable(cfg: TrainConfig, out: Path, damage: str, ckpt: dict | None) -> None:
    """A finished run's final weights are damaged: they are rebuilt from a checkpoint of the last epoch
    (resuming from it trains nothing and writes them again); without one, say how to recover."""
    weights = out / files.WEIGHTS
    if ckpt is None:
        raise UsageError(f"{damage}, and there is no {files.CHECKPOINT} to rebuild them from; restore {weights} "
                         f"or train the run again into a new --out")
    if ckpt["epoch"] != cfg.epochs or ckpt["step"]:
        raise UsageError(f"{damage}, and {out / files.CHECKPOINT} is at epoch {ckpt['epoch']} of {cfg.epochs}; "
                         f"delete {weights} and resume again to train the remaining epochs from the checkpoint")
    log.warning("%s: %s; rebuilding it from %s", out, damage, out / files.CHECKPOINT)


# -------------------------------------------------------------------- a checkpoint, field by field


def validate_checkpoint(ckpt: dict, path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        cfg: TrainConfig, steps_per_epoch: int) -> None:
    """Check every field of a checkpoint against this run before any of it is used.

    A damaged or foreign checkpoint raises one UsageError line naming `path` and the field, instead of
    resuming into the wrong epoch (`step` at the epoch's end), or a traceback deep inside
    load_state_dict or the RNG setters.
    """
    def bad(field: str, why: str) -> UsageError:
        return UsageError(f"{path}: {field} {why}; delete {path} to restart the run from scratch, or restore it")

    def foreign(field: str, why: str) -> UsageError:
        return UsageError(f"{path} cannot be restored: its weights failed to load into this run's {cfg.arch!r} "
                          f"model ({field} {why}); delete {path} to restart the run from scratch")

    epoch, step = ckpt["epoch"], ckpt["step"]
    if not 0 <= step < steps_per_epoch or (epoch == cfg.epochs and step):
        raise bad("step", f"{step} is outside epoch {epoch + 1}'s {steps_per_epoch} steps (0..{steps_per_epoch - 1})")
    if len(ckpt["metrics"]) != epoch:  # fewer rows: a final checkpoint would write weights as final too early
        raise bad("metrics", f"hold {len(ckpt['metrics'])} rows, but the checkpoint is at the end of epoch {epoch}: "
                  "one row per finished epoch")
    for i, row in enumerate(ckpt["metrics"]):
        why = _metrics_row_damage(row, i + 1)
        if why:
            raise bad(f"metrics row {i + 1}", why)
    for key, kinds in (("loss_sum", (int, float)), ("count", (int,)), ("seconds", (int, float))):
        value = ckpt["running"][key]
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) or value < 0:
            raise bad(f"running.{key}", f"is {_show(value)}, not a finite number of at least 0")
    _check_tensors("model", ckpt["model"], model.state_dict(), foreign)
    tensors.check_finite_state(ckpt["model"], f"{path} (model)")
    _check_optimizer(ckpt["optimizer"], optimizer, bad)
    _check_rng(ckpt["rng"], bad)


METRICS_ROW = {"epoch": (int,), "lr": (int, float), "train_loss": (int, float), "seconds": (int, float)}


def _metrics_row_damage(row, epoch: int) -> str | None:
    """Why `row` is not the metrics row training writes for `epoch` (None if it is)."""
    if not isinstance(row, dict):
        return f"is {_show(row)}, not a table"
    for key, kinds in METRICS_ROW.items():
        value = row.get(key)
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
            return f"has {key} {_show(value)}, not a finite number"
    if row["epoch"] != epoch:
        return f"is for epoch {row['epoch']}, not {epoch}"
    return None


def _show(value) -> str:
    """A value for a one-line message: a tensor by its shape, anything else by a short repr."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    text = " ".join(repr(value).split()) if not isinstance(value, int) or abs(value) < 10**30 else "a huge integer"
    return text if len(text) <= 40 else text[:37] + "..."


def _check_tensors(field: str, saved: dict, expected: dict[str, torch.Tensor], bad) -> None:
    if set(saved) != set(expected):
        odd = sorted(set(saved) ^ set(expected), key=str)[0]
        raise bad(f"{field}.{odd}", "does not belong to this run's model")
    for name, t in expected.items():
        s = saved[name]
        if not isinstance(s, torch.Tensor) or s.shape != t.shape or s.dtype != t.dtype:
            what = f"a {type(s).__name__}" if not isinstance(s, torch.Tensor) else f"{s.dtype} {tuple(s.shape)}"
            raise bad(f"{field}.{name}", f"is {what}, not {t.dtype} {tuple(t.shape)}")


def _check_optimizer(saved: dict, optimizer: torch.optim.Optimizer, bad) -> None:
    params = [p for g in optimizer.param_groups for p in g["params"]]
    groups, state = saved.get("param_groups"), saved.get("state")
    if not isinstance(groups, list) or len(groups) != len(optimizer.param_groups) or not isinstance(state, dict):
        raise bad("optimizer", "is not this run's SGD state")
    for group in groups:
        if not isinstance(group, dict) or not isinstance(group.get("params"), list):
            raise bad("optimizer.param_groups", "are malformed")
        for key in ("lr", "momentum", "weight_decay", "dampening"):
            value = group.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad(f"optimizer.param_groups.{key}", f"is {_show(value)}, not a finite number")
    for index, entry in state.items():
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(params) \
                or not isinstance(entry, dict):
            raise bad("optimizer.state", f"has an entry for parameter {_show(index)}, which this run does not have")
        buf = entry.get("momentum_buffer")
        if buf is None:
            continue
        p = params[index]
        if not isinstance(buf, torch.Tensor) or buf.shape != p.shape or buf.dtype != p.dtype:
            what = f"{buf.dtype} {tuple(buf.shape)}" if isinstance(buf, torch.Tensor) else f"a {type(buf).__name__}"
            raise bad(f"optimizer.state.{index}.momentum_buffer", f"is {what}, not {p.dtype} {tuple(p.shape)}")
        if not bool(torch.isfinite(buf).all()):
            raise bad(f"optimizer.state.{index}.momentum_buffer", "holds NaN or infinite values")


def _check_rng(rng: dict, bad) -> None:
    expected = {"python": (torch.int64, (625,)), "numpy": (torch.int64, (624,)),
                "torch": (torch.uint8, tuple(torch.get_rng_state().shape))}
    for key, (dtype, shape) in expected.items():
        t = rng[key]
        if not isinstance(t, torch.Tensor) or t.dtype != dtype or tuple(t.shape) != shape:
            what = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else f"a {type(t).__name__}"
            raise bad(f"rng.{key}", f"is {what}, not {dtype} {shape}")
    if isinstance(rng["numpy"], torch.Tensor) and bool(((rng["numpy"] < 0) | (rng["numpy"] >= 2**32)).any()):
        raise bad("rng.numpy", "holds values outside 32 bits")
    if bool(((rng["python"][:624] < 0) | (rng["python"][:624] >= 2**32)).any()) \
            or not 0 <= int(rng["python"][624]) <= 624:
        raise bad("rng.python", "is not a Mersenne Twister state")
    for key, kinds in (("numpy_pos", (int,)), ("numpy_has_gauss", (int,)), ("numpy_gauss", (int, float))):
        value = rng[key]
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise bad(f"rng.{key}", f"is {_show(value)}, not a number")
    if not 0 <= rng["numpy_pos"] <= 624:
        raise bad("rng.numpy_pos", f"is {rng['numpy_pos']}, outside 0..624")
    if rng["python_gauss"] is not None and (isinstance(rng["python_gauss"], bool)
                                            or not isinstance(rng["python_gauss"], (int, float))):
        raise bad("rng.python_gauss", f"is {_show(rng['python_gauss'])}, not a number or None")
