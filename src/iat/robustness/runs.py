"""Several run directories evaluated on one test set: load and check them before any work or output."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from iat.config import TrainConfig
from iat.errors import UsageError

STEP_RULE = "eps/4"  # the default PGD step for a given eps: 2/255 at 8/255, the paper's ratio


def default_step(eps: float) -> float:
    """The step size used at `eps` when none is given (STEP_RULE)."""
    return eps / 4


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


def check_sweep_args(eps_list: list[float], steps: int) -> list[float]:
    """The eps values ascending and deduplicated; UsageError for an empty list, eps outside [0,1] or steps < 1."""
    eps_sorted = sorted(set(eps_list))
    if not eps_sorted or eps_sorted[0] < 0 or eps_sorted[-1] > 1:
        raise UsageError(f"eps list {eps_list} must be non-empty values in [0, 1]")
    if steps < 1:
        raise UsageError(f"--steps {steps} must be at least 1")
    return eps_sorted


def load_runs(run_dirs: list[str | Path], limit: int | None = None, device: str = "auto",
              data_dir: str | None = None, min_runs: int = 1) -> Runs:
    """Load every run and the test split of their common data set; UsageError if they disagree."""
    from iat.data import load_data
    from iat.evaluate import load_run_config, load_run_model
    from iat.train import resolve_device

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
    configs = [load_run_config(name) for name in names]
    datasets = {c.dataset for c in configs}
    if len(datasets) > 1:
        pairs = ", ".join(f"{n}: {c.dataset}" for n, c in zip(names, configs))
        raise UsageError(f"the runs were trained on different data sets ({pairs}); compare runs of one data set")
    dev = resolve_device(device)
    models = [load_run_model(name, dev) for name in names]
    dataset = configs[0].dataset
    x, y = load_data(dataset, "test", data_dir or configs[0].data_dir, limit=limit)
    return Runs(names, configs, models, x.to(dev), y.to(dev), dataset, dev)


def common_eps(runs: Runs) -> float:
    """The training eps the runs share; UsageError (asking for --eps) if they differ."""
    values = {c.eps for c in runs.configs}
    if len(values) > 1:
        raise UsageError(f"the runs were trained at different eps ({', '.join(f'{v:g}' for v in sorted(values))}); "
                         "give --eps")
    return values.pop()


def short_eps(eps: float) -> str:
    """The short form for table headers: `0.1` for a short decimal, else `8/255` for whole 255ths."""
    k = eps * 255
    if round(eps, 3) == eps or abs(k - round(k)) > 1e-6:
        return f"{eps:g}"
    return f"{round(k)}/255"


def run_labels(names: list[str]) -> dict[str, str]:
    """Short row labels: each run directory's last path part, or the whole path where two share it."""
    base = {n: Path(n).name or n for n in names}
    clash = {b for b in base.values() if list(base.values()).count(b) > 1}
    return {n: (n if b in clash else b) for n, b in base.items()}
