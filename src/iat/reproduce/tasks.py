"""One run of an experiment as a task for a launcher: train it (unless it is done), then measure it.

"Done" is decided one way everywhere: a run is done when its directory holds this configuration's final
weights (`iat.training.is_complete`); a measurement is done when OUT/cache/ holds it under a key made of its
inputs and the size and time of the run's weights, so a retrained run is measured afresh.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import subprocess
import sys
import tempfile
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
from iat.rundir import files, outdir
from iat.rundir.read import load_run_model
from iat.training import train

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
    # processes sharing each AutoAttack measurement (iat reproduce --eval-procs); above 1 it runs under torchrun
    # after training, from the command's own process (which sees every GPU), not in the run's worker
    autoattack_procs: int = 1

    @property
    def autoattack_batch(self) -> int:
        """AutoAttack's batch: evaluate's 500, or fewer so that each of the processes gets a batch of the N images
        (1,000 images on 8 processes: 125)."""
        share = -(-(self.autoattack_limit or 0) // self.autoattack_procs)
        return share if self.autoattack_procs > 1 and 0 < share < AUTOATTACK_BATCH else AUTOATTACK_BATCH


AUTOATTACK_COLUMNS = ["clean", "pgd20", "autoattack"]
AUTOATTACK_BATCH = 500  # evaluate()'s default: the batch of every measurement made before --eval-procs
AUTOATTACK_SKIPPED = "AutoAttack column skipped: it needs the optional extra, pip install 'iat[autoattack]'"


def whitebox_plan(s: Settings, autoattack_procs: int = 1) -> Whitebox | None:
    """The white-box columns an experiment's Settings ask for; AutoAttack dropped, in one line, without its extra."""
    if not s.attacks:
        return None
    n = s.autoattack_limit
    if n is not None and s.test_size is not None:
        n = min(n, s.test_size)
    if n and not aa.autoattack_available():
        log.warning(AUTOATTACK_SKIPPED)
        n = None
    return Whitebox(list(s.attacks), s.eval_eps, s.eval_step_size, s.test_size, n, autoattack_procs)


def measure_autoattack(run: Path, cfg: TrainConfig, wb: Whitebox, progress: bool = False,
                       weights: str = "last") -> dict:
    """Standard AutoAttack on a run's first N test images, with clean and PGD-20 on the same N for comparison:
    fp32, eval mode, the run's device, seeded with the run's seed. weights: 'last' or 'ema' (a run with --ema).
    With `wb.autoattack_procs` > 1, `iat eval` under torchrun on that many processes (autoattack_command)."""
    import importlib.metadata

    device = resolve_device(cfg.device)
    started, cpu = time.perf_counter(), time.process_time()  # recorded: AutoAttack's cost sets N
    if wb.autoattack_procs > 1:
        results, n = eval_under_torchrun(run, cfg, wb, weights)
        cpu_seconds = None  # the workers' CPU time is theirs, not this process's
    else:
        model = load_run_model(run, device, weights=weights).float()  # fp32 whatever the run trained in
        x, y = load_data(cfg.dataset, "test", cfg.data_dir, limit=wb.autoattack_limit, image_size=cfg.image_size)
        with torch.autocast(device.type, enabled=False):
            results = evaluate(model, x, y, AUTOATTACK_COLUMNS, budget=AttackBudget(wb.eps, wb.step_size),
                               batch_size=wb.autoattack_batch, seed=cfg.seed, progress=progress)
        n, cpu_seconds = len(x), round(time.process_time() - cpu, 1)
    split = {k: results["autoattack"][k] for k in ("batch_size", "examples_per_rank", "seconds_per_rank")}
    return {"version": "standard", "components": list(aa.COMPONENTS), "n_examples": n, "eps": wb.eps,
            "step_size": wb.step_size, "seed": cfg.seed, "device": str(device),
            "package": f"{aa.PACKAGE} {importlib.metadata.version(aa.PACKAGE)}",
            "seconds": round(time.perf_counter() - started, 1), "cpu_seconds": cpu_seconds,
            "processes": wb.autoattack_procs, **split, "results": {a: r["error"] for a, r in results.items()}}


def autoattack_command(run: Path, cfg: TrainConfig, wb: Whitebox, weights: str, out: Path) -> list[str]:
    """`iat eval` of measure_autoattack's columns on `wb.autoattack_procs` processes (torchrun, one machine), its
    eval.json into `out`: the settings measure_autoattack uses in one process, so the same numbers."""
    cmd = [sys.executable, "-m", "iat.torchrun", "--standalone", "--nproc_per_node", str(wb.autoattack_procs),
           "-m", "iat", "eval", str(run), "--attacks", ",".join(AUTOATTACK_COLUMNS), "--eps", repr(wb.eps),
           "--step-size", repr(wb.step_size), "--limit", str(wb.autoattack_limit),
           "--batch-size", str(wb.autoattack_batch), "--weights", weights, "--device", cfg.device, "--out", str(out),
           "-q"]
    return cmd + (["--data-dir", str(cfg.data_dir)] if cfg.data_dir else [])


def eval_under_torchrun(run: Path, cfg: TrainConfig, wb: Whitebox, weights: str) -> tuple[dict, int]:
    """(evaluate()'s results, number of images) of autoattack_command, run in a temporary --out directory."""
    with tempfile.TemporaryDirectory(prefix="iat-autoattack-") as tmp:
        cmd = autoattack_command(run, cfg, wb, weights, Path(tmp))
        log.info("%s: AutoAttack on %d processes: %s", run.name, wb.autoattack_procs, shlex.join(cmd))
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
            raise RuntimeError(f"AutoAttack of {run} on {wb.autoattack_procs} processes failed (exit "
                               f"{done.returncode}): {last}; the command was: {shlex.join(cmd)}")
        report = files.read_json(Path(tmp) / files.EVAL)
    return report["results"], report["n_examples"]


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
    with outdir.lock_dir(task.run_dir, "run directory"):
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
        if wb.autoattack_limit and wb.autoattack_procs == 1:  # else the runner measures it after training
            measured["whitebox"] = with_autoattack(task, measured["whitebox"])
    if task.norms:
        measured["norms"] = cached(task.out, f"norms-{run.name}", {"run": str(run), "weights": weights},
                                   lambda: run_norms(run))
    if task.probe is not None:
        pcfg = task.probe
        key = {"run": str(run), "weights": weights, "probe": dataclasses.asdict(pcfg)}
        measured["probe"] = cached(task.out, f"probe-{run.name}", key, lambda: probe_run(
            run, cfg=pcfg, device=cfg.device, data_dir=cfg.data_dir))
    return measured


def with_autoattack(task: RunTask, whitebox: dict) -> dict:
    """`whitebox` (the run's white-box measurement) with AutoAttack's (cached) under `autoattack`, and under
    `autoattack_by_weights` for a run with averaged weights, measured on each."""
    run, cfg, wb = task.run_dir, task.cfg, task.whitebox
    weights = fingerprint(run)
    by_weights = {}
    for which in ("last", "ema") if "results_by_weights" in whitebox else ("last",):
        key = {"run": str(run), "weights": weights, "version": "standard", "n": wb.autoattack_limit,
               "eps": wb.eps, "step_size": wb.step_size, "seed": cfg.seed}
        if which != "last":  # the last weights' key as before, so that earlier measurements still count
            key["weights_file"] = which
        if wb.autoattack_batch != AUTOATTACK_BATCH:  # another batch is another draw of AutoAttack's randomness
            key["batch_size"] = wb.autoattack_batch
        by_weights[which] = cached(
            task.out, f"autoattack-{run.name}" + ("" if which == "last" else f"-{which}"), key,
            lambda which=which: measure_autoattack(run, cfg, wb, task.progress, weights=which))
    whitebox = {**whitebox, "autoattack": by_weights["last"]}
    if len(by_weights) > 1:
        whitebox["autoattack_by_weights"] = by_weights
    return whitebox
