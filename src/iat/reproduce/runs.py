"""One run of an experiment as a task for a launcher: train it (unless it is done), then measure it.

"Done" is decided one way everywhere: a run is done when its directory holds this configuration's final
weights (`iat.train.is_complete`); a measurement is done when OUT/cache/ holds it under a key made of its
inputs and the size and time of the run's weights, so a retrained run is measured afresh.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from iat import runio
from iat.analysis.norms import run_norms
from iat.analysis.probe import ProbeConfig, probe_run
from iat.config import TrainConfig
from iat.evaluate import evaluate_run
from iat.methods import METHODS
from iat.train import train

log = logging.getLogger(__name__)


def fingerprint(run_dir: Path) -> list[int]:
    """Size and modification time of a run's weights: a retrained run measures afresh."""
    st = (run_dir / runio.WEIGHTS).stat()
    return [st.st_size, st.st_mtime_ns]


def cached(out: Path, name: str, key: dict, compute: Callable[[], object]):
    """compute(), or its value from OUT/cache/NAME.json when that was computed for the same key."""
    path = out / "cache" / f"{name}.json"
    key = json.loads(json.dumps(key))  # as it reads back: tuples become lists
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict) and data.get("key") == key:
            log.info("%s: cached", name)
            return data["value"]
    value = compute()
    path.parent.mkdir(exist_ok=True)
    runio.write_json(path, {"key": key, "value": value})
    return value


@dataclass(frozen=True)
class Whitebox:
    """The white-box columns measured on each run."""

    attacks: list[str]
    eps: float
    step_size: float
    limit: int | None  # first N test images (None: all)


@dataclass(frozen=True)
class RunTask:
    """Everything a worker needs for one run; plain data, so it pickles to another process or machine."""

    cfg: TrainConfig
    run_dir: Path
    out: Path  # the experiment's directory (its cache/)
    done: bool  # already trained: measure only
    whitebox: Whitebox | None = None
    norms: bool = False
    probe: ProbeConfig | None = None
    progress: bool = True

    @property
    def adversarial(self) -> bool:  # such runs take ~8x longer: a pool starts them first so it drains evenly
        return METHODS[self.cfg.method].adversarial


def run_task(task: RunTask) -> dict:
    """Train (or resume) the run unless it is done, then measure it; {"whitebox"/"norms"/"probe": value}."""
    run, cfg = task.run_dir, task.cfg
    if not task.done:
        train(cfg, run, resume=True, progress=task.progress)
    measured = {}
    weights = fingerprint(run)
    if task.whitebox is not None:
        wb = task.whitebox
        key = {"run": str(run), "weights": weights, "attacks": wb.attacks, "eps": wb.eps, "step_size": wb.step_size,
               "limit": wb.limit}
        measured["whitebox"] = cached(task.out, f"eval-{run.name}", key, lambda: evaluate_run(
            run, wb.attacks, eps=wb.eps, step_size=wb.step_size, limit=wb.limit, device=cfg.device,
            data_dir=cfg.data_dir, progress=task.progress))
    if task.norms:
        measured["norms"] = cached(task.out, f"norms-{run.name}", {"run": str(run), "weights": weights},
                                   lambda: run_norms(run))
    if task.probe is not None:
        pcfg = task.probe
        key = {"run": str(run), "weights": weights, "probe": dataclasses.asdict(pcfg)}
        measured["probe"] = cached(task.out, f"probe-{run.name}", key, lambda: probe_run(
            run, cfg=pcfg, device=cfg.device, data_dir=cfg.data_dir))
    return measured
