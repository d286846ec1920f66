"""One run of an experiment as a task for a launcher: train it (unless it is done), then measure it.

"Done" is decided one way everywhere: a run is done when its directory holds this configuration's final
weights (`iat.train.is_complete`); a measurement is done when OUT/cache/ holds it under a key made of its
inputs and the size and time of the run's weights, so a retrained run is measured afresh.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from iat.analysis.norms import run_norms
from iat.analysis.probe import ProbeConfig, probe_run
from iat.attacks import AttackBudget
from iat.attacks import autoattack as aa
from iat.config import TrainConfig, resolve_device
from iat.data import load_data
from iat.evaluate import evaluate, evaluate_run
from iat.methods import METHODS
from iat.reproduce.experiment import Settings
from iat.rundir import files
from iat.rundir.read import load_run_model
from iat.train import train

log = logging.getLogger(__name__)


def fingerprint(run_dir: Path) -> list[int]:
    """Size and modification time of a run's weights: a retrained run measures afresh."""
    st = (run_dir / files.WEIGHTS).stat()
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
    files.write_json(path, {"key": key, "value": value})
    return value


@dataclass(frozen=True)
class Whitebox:
    """The white-box columns measured on each run."""

    attacks: list[str]
    eps: float
    step_size: float
    limit: int | None  # first N test images (None: all)
    autoattack_limit: int | None = None  # standard AutoAttack and PGD-20 on the first N test images (None: not run)


AUTOATTACK_SKIPPED = "AutoAttack column skipped: it needs the optional extra, pip install 'iat[autoattack]'"


def whitebox_plan(s: Settings) -> Whitebox | None:
    """The white-box columns an experiment's Settings ask for; AutoAttack dropped, in one line, without its extra."""
    if not s.attacks:
        return None
    n = s.autoattack_limit
    if n is not None and s.test_size is not None:
        n = min(n, s.test_size)
    if n and not aa.autoattack_available():
        log.warning(AUTOATTACK_SKIPPED)
        n = None
    return Whitebox(list(s.attacks), s.eval_eps, s.eval_step_size, s.test_size, n)


def measure_autoattack(run: Path, cfg: TrainConfig, wb: Whitebox, progress: bool = False,
                       weights: str = "last") -> dict:
    """Standard AutoAttack on a run's first N test images, with clean and PGD-20 on the same N for comparison:
    fp32, eval mode, the run's device, seeded with the run's seed. weights: 'last' or 'ema' (a run with --ema)."""
    import importlib.metadata

    device = resolve_device(cfg.device)
    model = load_run_model(run, device, weights=weights).float()  # fp32 whatever the run trained in
    x, y = load_data(cfg.dataset, "test", cfg.data_dir, limit=wb.autoattack_limit, image_size=cfg.image_size)
    started, cpu = time.perf_counter(), time.process_time()  # recorded: AutoAttack's cost sets N
    with torch.autocast(device.type, enabled=False):
        results = evaluate(model, x, y, ["clean", "pgd20", "autoattack"], budget=AttackBudget(wb.eps, wb.step_size),
                           seed=cfg.seed, progress=progress)
    return {"version": "standard", "components": list(aa.COMPONENTS), "n_examples": len(x), "eps": wb.eps,
            "step_size": wb.step_size, "seed": cfg.seed, "device": str(device),
            "package": f"{aa.PACKAGE} {importlib.metadata.version(aa.PACKAGE)}",
            "seconds": round(time.perf_counter() - started, 1), "cpu_seconds": round(time.process_time() - cpu, 1),
            "results": {a: r["error"] for a, r in results.items()}}


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
    def log_path(self) -> Path:
        """Where a pool worker logs this run, with the Python stack of a native crash (reproduce/launch.py)."""
        return self.out / "logs" / f"{self.run_dir.name}.log"

    @property
    def adversarial(self) -> bool:  # such runs take ~8x longer: a pool starts them first so it drains evenly
        return METHODS[self.cfg.method].adversarial


def run_task(task: RunTask) -> dict:
    """Train (or resume) the run unless it is done, then measure it; {"whitebox"/"norms"/"probe": value}."""
    # The experiment's lock covers OUT, not the run directories inside it: without a lock of its own, a plain
    # `iat train --out OUT/RUN --resume` (or `iat eval OUT/RUN`) would write the run while this task does.
    with files.lock_dir(task.run_dir, "run directory"):
        return _run_task(task)


def _run_task(task: RunTask) -> dict:
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
        if wb.autoattack_limit:
            by_weights = {}
            for which in ("last", "ema") if "results_by_weights" in measured["whitebox"] else ("last",):
                key = {"run": str(run), "weights": weights, "version": "standard", "n": wb.autoattack_limit,
                       "eps": wb.eps, "step_size": wb.step_size, "seed": cfg.seed}
                if which != "last":  # the last weights' key as before, so that earlier measurements still count
                    key["weights_file"] = which
                by_weights[which] = cached(
                    task.out, f"autoattack-{run.name}" + ("" if which == "last" else f"-{which}"), key,
                    lambda which=which: measure_autoattack(run, cfg, wb, task.progress, weights=which))
            measured["whitebox"] = {**measured["whitebox"], "autoattack": by_weights["last"]}
            if len(by_weights) > 1:
                measured["whitebox"]["autoattack_by_weights"] = by_weights
    if task.norms:
        measured["norms"] = cached(task.out, f"norms-{run.name}", {"run": str(run), "weights": weights},
                                   lambda: run_norms(run))
    if task.probe is not None:
        pcfg = task.probe
        key = {"run": str(run), "weights": weights, "probe": dataclasses.asdict(pcfg)}
        measured["probe"] = cached(task.out, f"probe-{run.name}", key, lambda: probe_run(
            run, cfg=pcfg, device=cfg.device, data_dir=cfg.data_dir))
    return measured
