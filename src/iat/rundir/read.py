"""Run directories, read back: a run's config and trained model, and several runs on one test set.

Everything that reads a run directory written by `iat train` for evaluation or analysis comes
through here, and refuses a missing, unfinished or damaged run with one UsageError line.

    cfg = load_run_config("runs/pgd"); model = load_run_model("runs/pgd", "cpu")
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from iat.config import TrainConfig, build_model, check_input_size, resolve_device
from iat.data import load_data
from iat.errors import UsageError
from iat.models import MixableNet
from iat.rundir import files, tensors


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The validated TrainConfig of a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"run directory {run_dir} " + ("is a file, not a run directory of `iat train`"
                                                         if run_dir.exists() else "does not exist"))
    raw = files.read_json(run_dir / files.CONFIG)
    if not isinstance(raw, dict) or "arch" not in raw or "dataset" not in raw:
        raise UsageError(f"{run_dir / files.CONFIG} is not an iat run configuration (no arch/dataset)")
    try:
        return TrainConfig.from_dict(raw).validate()
    except UsageError as e:  # worded for a flag ("--epochs -1 ..."): name the file and the key instead
        message = re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", "_"), str(e))
        raise UsageError(f"{run_dir / files.CONFIG}: {_short(message)}; the file is damaged: restore it or "
                         "train the run again") from None
    except (TypeError, ValueError, RecursionError, OverflowError) as e:  # e.g. a value too long to print
        raise UsageError(f"{run_dir / files.CONFIG} has malformed values ({_short(str(e) or type(e).__name__)}); "
                         "the file is damaged: restore it or train the run again") from None


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


WEIGHT_FILES = {"last": files.WEIGHTS, "ema": "model_ema.safetensors"}  # iat eval --weights; ema: iat.training.ema


def load_run_model(run_dir: str | Path, device: str | torch.device = "cpu", weights: str = "last") -> MixableNet:
    """The trained model of a run directory, in eval mode: its final weights ('last') or, for a run trained with
    --ema, the averaged ones ('ema')."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    if weights == "ema" and not (run_dir / WEIGHT_FILES["ema"]).is_file():
        raise UsageError(f"{run_dir / WEIGHT_FILES['ema']} is missing: the run was not trained with --ema (or has "
                         "not finished); use --weights last")
    state = tensors.load_weights(run_dir / WEIGHT_FILES[weights])  # refuses NaN, inf, negative variances
    check_model_size(cfg, f"{run_dir / files.CONFIG}: width")
    try:
        model = build_model(cfg)
    except (RuntimeError, MemoryError) as e:  # a config.json width no machine holds
        raise UsageError(f"{run_dir / files.CONFIG}: its model cannot be built ({_short(str(e), 120)}); "
                         "the file is damaged: restore it") from None
    mismatch = weights_mismatch(cfg, state)
    if mismatch:  # load_state_dict would cast an int32 tensor silently and score it
        raise UsageError(f"{run_dir / WEIGHT_FILES[weights]} does not match the architecture {cfg.arch!r} of its "
                         f"config.json ({mismatch}); the file is damaged: restore it or train the run again")
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError) as e:
        detail = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise UsageError(f"{run_dir / files.WEIGHTS} does not match the architecture {cfg.arch!r} of its "
                         f"config.json ({_short(detail, 220)})") from None
    return model.to(device).eval()


def weights_mismatch(cfg: TrainConfig, state: dict[str, torch.Tensor]) -> str | None:
    """Why `state` is not the weights of `cfg`'s model (a tensor missing, extra, or of another shape or
    dtype), or None if every tensor fits. Checked on shapes alone: nothing is allocated."""
    with torch.device("meta"):
        expected = build_model(cfg).state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        return f"tensor {missing[0]} is missing"
    extra = [k for k in state if k not in expected]
    if extra:
        return f"tensor {extra[0]} is not part of the model"
    for name, want in expected.items():
        got = state[name]
        if got.dtype != want.dtype or got.shape != want.shape:
            return (f"tensor {name} is {str(got.dtype).removeprefix('torch.')} {tuple(got.shape)}, not "
                    f"{str(want.dtype).removeprefix('torch.')} {tuple(want.shape)}")
    return None


MAX_PARAMETERS = 2_000_000_000  # 8 GB of float32 weights, before gradients and momentum: no machine trains it


def check_model_size(cfg: TrainConfig, source: str = "--width") -> None:
    """Refuse a width that builds a model no machine can hold, before allocating it (it would crash)."""
    with torch.device("meta"):  # shapes only: no memory is allocated
        model = build_model(cfg)
    n = sum(p.numel() for p in model.parameters())
    if n > MAX_PARAMETERS:
        raise UsageError(f"{source} {cfg.width} makes {cfg.arch} a model of {n:,} parameters ({4 * n / 1e9:.0f} GB), "
                         f"more than {MAX_PARAMETERS:,}; choose a smaller width")
    check_input_size(cfg, model)


def check_finished(run_dirs: list[str | Path]) -> None:
    """Refuse, before any output, an empty list or a directory that is not a finished run."""
    if not run_dirs:
        raise UsageError("give at least one run directory")
    for run_dir in run_dirs:
        load_run_config(run_dir)
        if not (Path(run_dir) / files.WEIGHTS).is_file():
            raise UsageError(f"{Path(run_dir) / files.WEIGHTS} is missing: the run has not finished training "
                             "(resume it with `iat train ... --resume`)")


@dataclass
class Runs:
    """Run directories (as given), their configs and models, and the shared test split."""

    names: list[str]
    configs: list[TrainConfig]
    models: list[nn.Module]
    x: torch.Tensor  # (N, C, H, W) in [0,1], on `device`
    y: torch.Tensor  # (N,) int64
    dataset: str
    device: torch.device


def load_runs(run_dirs: list[str | Path], limit: int | None = None, device: str = "auto", *,
              data_dir: str | None = None, min_runs: int = 1) -> Runs:
    """Load every run and the test split of their common data set; UsageError if they disagree."""
    names = [os.fspath(r) for r in run_dirs]
    if len(names) < min_runs:
        raise UsageError(f"give at least {min_runs} run directories, got {len(names)}")
    seen = set()
    for name in names:
        key = Path(name).resolve()
        if key in seen:
            raise UsageError(f"run directory {name} is given twice")
        seen.add(key)
    if limit is not None and limit < 1:
        raise UsageError(f"--limit {limit} must be at least 1")
    configs = _configs(names)
    datasets = {c.dataset for c in configs}
    if len(datasets) > 1:
        pairs = ", ".join(f"{n}: {c.dataset}" for n, c in zip(names, configs))
        raise UsageError(f"the runs were trained on different data sets ({pairs}); compare runs of one data set")
    dev = resolve_device(device)
    models = [_model(name, cfg, dev) for name, cfg in zip(names, configs)]
    dataset = configs[0].dataset
    x, y = load_data(dataset, "test", data_dir or configs[0].data_dir, limit=limit,
                     image_size=configs[0].image_size)
    return Runs(names, configs, models, x.to(dev), y.to(dev), dataset, dev)


def _configs(names: list[str]) -> list[TrainConfig]:
    """The runs' configs; a RobustBench zoo model (rb:NAME, iat.zoo) takes the runs' data set (else cifar10)."""
    from iat.zoo import is_zoo, zoo_config

    runs = {name: load_run_config(name) for name in names if not is_zoo(name)}
    dataset = next(iter(runs.values())).dataset if runs else "cifar10"
    return [runs[name] if name in runs else zoo_config(name, dataset) for name in names]


def _model(name: str, cfg: TrainConfig, device: torch.device) -> nn.Module:
    from iat.zoo import current_source, is_zoo, load_zoo_model

    if not is_zoo(name):
        return load_run_model(name, device)
    model_dir, download = current_source()
    return load_zoo_model(name, model_dir, download, cfg.dataset, device)
