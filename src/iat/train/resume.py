"""What is in `--out` before training starts: nothing, this run's checkpoint, or a finished run.

Everything here only reads: bad input raises a one-line UsageError and leaves the file system as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from iat import runio
from iat.config import RESUME_KEYS, TrainConfig
from iat.errors import UsageError

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
    """'--epochs 5 differs from ...' for the first option that decides the weights and differs."""
    current = cfg.to_dict()
    for k in RESUME_KEYS:
        if saved.get(k) != current.get(k):
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
    if not (out / runio.CONFIG).is_file():
        if runio.is_empty(out):
            return None  # killed before config.json was written: start afresh
        raise UsageError(f"--out {out} is not a run directory of `iat train` (no {runio.CONFIG}); "
                         "choose another --out, or drop --resume to train into a new directory")
    saved = runio.read_json(out / runio.CONFIG)
    if not isinstance(saved, dict):
        raise UsageError(f"{out / runio.CONFIG} is not an iat run configuration; the file is damaged")
    diff = first_difference(cfg, saved)
    if diff:
        raise UsageError(f"--resume {out}: {diff}")
    return saved


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
    """True if `out` holds this configuration's finished run (its final weights are written).

    Raises UsageError if `out` holds a run with other options.
    """
    out = Path(out)
    saved = check_resumable(cfg, out)
    return saved is not None and (out / runio.WEIGHTS).is_file()


def check_new_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory; choose another --out")
    if out.is_dir() and not runio.is_empty(out):
        raise UsageError(f"--out {out} already exists and is not empty; pass --resume to continue it, "
                         "or choose another directory")
    runio.check_out_dir(out)


@dataclass
class Prior:
    """What `--out` already holds for this run: its config.json, its checkpoint, whether it is finished."""

    config: dict | None = None
    checkpoint: dict | None = None
    complete: bool = False


def find_prior(cfg: TrainConfig, out: Path, resume: bool) -> Prior:
    """Check `out` for a new run, or read what a resumed run continues from."""
    if not resume:
        check_new_out(out)
        return Prior()
    saved = check_resumable(cfg, out)
    if saved is not None and (out / runio.WEIGHTS).is_file():
        return Prior(saved, complete=True)
    ckpt = None
    if saved is not None and (out / runio.CHECKPOINT).is_file():
        ckpt = check_checkpoint(cfg, out / runio.CHECKPOINT, runio.load_checkpoint(out / runio.CHECKPOINT))
    return Prior(saved, ckpt)
