"""RobustBench's model zoo as `rb:NAME`: a published defense, loaded offline, to audit or compare with a run.

Models come from `robustbench.utils.load_model` (the optional extra `iat[robustbench]`), L-inf, from a folder
of checkpoints in RobustBench's layout: MODEL_DIR/DATASET/Linf/NAME.pt (an ensemble: NAME.pt_m0.pt, ...).
Nothing is downloaded unless asked (`download=True`, the commands' --download). Like iat's own networks,
a zoo model takes images in [0,1] (its normalization is inside) and returns logits.

    model = load_zoo_model("rb:Ding2020MMA", model_dir="models")   # models/cifar10/Linf/Ding2020MMA.pt
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.machinery
import importlib.resources
import importlib.util
import sys
import types
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch
from torch import nn

from iat.errors import UsageError

PREFIX = "rb:"
THREAT = "Linf"  # iat's attacks and training are L-inf
DATASETS = ("cifar10", "cifar100")  # iat data sets RobustBench ranks (its imagenet is not one of iat's)
INSTALL = "pip install 'iat[robustbench]'"
DEFAULT_MODEL_DIR = "models"  # robustbench.utils.load_model's own default
ZOO_EPS, ZOO_STEP = 8 / 255, 2 / 255  # RobustBench's CIFAR L-inf threat model, and the paper's step at that eps

# Where rb:NAME models come from, for the command that runs: --model-dir and --download (set by `zoo_source`)
_source: ContextVar[tuple[str, bool]] = ContextVar("zoo_source", default=(DEFAULT_MODEL_DIR, False))


@contextlib.contextmanager
def zoo_source(model_dir: str | Path | None, download: bool = False) -> Iterator[None]:
    """rb:NAME models loaded inside the block come from `model_dir` (downloaded there only with `download`)."""
    token = _source.set((str(model_dir or DEFAULT_MODEL_DIR), bool(download)))
    try:
        yield
    finally:
        _source.reset(token)


def current_source() -> tuple[str, bool]:
    return _source.get()


def zoo_config(spec: str, dataset: str):
    """A stand-in training config for a zoo model among runs: its data set, RobustBench's eps, seed 0 (what the
    evaluation commands read from a run's config); `extra` names the model. Checks the name and checkpoint."""
    from iat.config import TrainConfig

    model_dir, download = current_source()
    name = check_zoo_model(spec, model_dir, download, dataset)
    return TrainConfig(method="erm", dataset=dataset, arch="preactresnet18", eps=ZOO_EPS, step_size=ZOO_STEP,
                       seed=0, extra={"robustbench": name})


def is_zoo(name: str) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def import_robustbench() -> Any:
    """The robustbench package, made importable where its 1.1.1 release needs help (see below)."""
    if importlib.util.find_spec("robustbench") is None:
        raise UsageError(f"rb:NAME needs RobustBench, which is not installed: {INSTALL}")
    # robustbench 1.1.1 imports `autoattack`, while the package it depends on (pyautoattack) installs the
    # same code as `pyautoattack`; and it imports pkg_resources, which setuptools 81 removed. It uses
    # pkg_resources for one call, resource_filename, which importlib.resources answers.
    if importlib.util.find_spec("autoattack") is None and importlib.util.find_spec("pyautoattack") is not None:
        sys.modules["autoattack"] = importlib.import_module("pyautoattack")
    if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")
        shim.__spec__ = importlib.machinery.ModuleSpec("pkg_resources", None)  # so find_spec answers for it
        shim.resource_filename = lambda package, path: str(importlib.resources.files(package) / path)
        sys.modules["pkg_resources"] = shim
    try:
        return importlib.import_module("robustbench")
    except ImportError as e:
        raise UsageError(f"RobustBench is installed but cannot be imported ({e}); reinstall it: {INSTALL}") from None


def zoo_entries(dataset: str) -> dict[str, dict]:
    """RobustBench's L-inf models for `dataset` (an iat data set name): name -> its zoo entry."""
    if dataset not in DATASETS:
        raise UsageError(f"RobustBench ranks no {dataset} models; rb:NAME takes --dataset {' or '.join(DATASETS)}")
    import_robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    return model_dicts[BenchmarkDataset(dataset)][ThreatModel(THREAT)]


def checkpoint_files(name: str, entry: dict, model_dir: str | Path, dataset: str) -> list[Path]:
    """The files `robustbench.utils.load_model` reads for `name` (and would download if absent)."""
    path = Path(model_dir) / dataset / THREAT / f"{name}.pt"
    ids = entry.get("gdrive_id")
    if isinstance(ids, list):
        return [Path(f"{path}_m{i}.pt") for i in range(len(ids))]
    return [path]


def check_zoo_model(spec: str, model_dir: str | Path = DEFAULT_MODEL_DIR, download: bool = False,
                    dataset: str = "cifar10") -> str:
    """The zoo name of `spec` ('rb:NAME'); UsageError for an unknown name or, without `download`, a missing
    checkpoint. Nothing is created."""
    name = spec[len(PREFIX):] if is_zoo(spec) else spec
    entries = zoo_entries(dataset)
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=3)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise UsageError(f"unknown RobustBench model {spec!r} for {dataset} {THREAT}{hint}; the "
                         f"{len(entries)} names are the leaderboard's, e.g. rb:{next(iter(entries))}")
    if download:
        return name
    if _hosted_by_timm(name, dataset):
        raise UsageError(f"{spec} is fetched from the Hugging Face hub by timm, not from --model-dir: add --download")
    missing = [p for p in checkpoint_files(name, entries[name], model_dir, dataset) if not p.is_file()]
    if missing:
        raise UsageError(f"{missing[0]} is missing: put {name}'s RobustBench checkpoint there (--model-dir names the "
                         "folder that holds DATASET/Linf/NAME.pt), or add --download to fetch it")
    return name


def _hosted_by_timm(name: str, dataset: str) -> bool:
    if importlib.util.find_spec("timm") is None:
        return False
    import timm

    return timm.is_model(f"{name.lower().replace('-', '_')}_{dataset}_{THREAT.lower()}")


def load_zoo_model(spec: str, model_dir: str | Path = DEFAULT_MODEL_DIR, download: bool = False,
                   dataset: str = "cifar10", device: str | torch.device = "cpu") -> nn.Module:
    """The RobustBench model `spec` ('rb:NAME') in eval mode on `device`: images in [0,1] -> logits."""
    name = check_zoo_model(spec, model_dir, download, dataset)
    from robustbench.utils import load_model

    try:
        model = load_model(name, model_dir=str(model_dir), dataset=dataset, threat_model=THREAT)
    except (RuntimeError, KeyError, ValueError, EOFError, OSError) as e:  # a damaged or foreign checkpoint
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UsageError(f"{spec}: its checkpoint in {Path(model_dir) / dataset / THREAT} cannot be loaded ({first}); "
                         "replace it (or fetch it again with --download)") from None
    return model.to(device).eval()
