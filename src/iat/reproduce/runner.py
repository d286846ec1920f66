"""Run one experiment: train every run it needs, measure them, and write results.json and report.md.

The one orchestrator: `iat reproduce NAME` and `iat demo` (experiments/demo.toml) both run here. Each
(method, seed) run is a task handed to a launcher (reproduce/launch.py): trained unless it is done, then
measured (reproduce/tasks.py says how "done" is decided, for runs and for measurements). Measurements that
need several runs at once (Tables 5-7) follow in this process, and so do the AutoAttack measurements with
--eval-procs N (each one `iat eval` under torchrun on N processes). Calling it again continues where it
stopped: finished runs are skipped, interrupted ones resume from their checkpoint, cached measurements
are reused, so a second call on a finished experiment trains and measures nothing.

Layout of OUT:
    experiment.json         which experiment, scale and settings this directory holds (checked on every call)
    METHOD-seedK/           one run directory per method (or variant, experiment.py) and seed (`iat train`'s files)
    cache/                  measurements, one JSON file each
    results.json, report.md and the plots; norms.json / probe.json / sweep-*.json / transfer.json
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import torch

from iat.config import old_switch, resolve_device
from iat.data import load_data
from iat.errors import UsageError
from iat.reproduce.experiment import DEFAULTS, Experiment, load_experiment
from iat.reproduce.launch import Launcher, make_launcher
from iat.reproduce.measure import (
    ROBUSTNESS,
    measure_robustness,
    norms_summary,
    probe_config,
    probe_summary,
    whitebox_summary,
)
from iat.reproduce.paper import paper_entry, published_entry
from iat.reproduce.report_md import write_report
from iat.reproduce.tasks import RunTask, run_task, whitebox_plan, with_autoattack
from iat.rundir import files, outdir
from iat.training import is_complete
from iat.version import __version__

log = logging.getLogger(__name__)

MANIFEST = "experiment.json"
EMA_SUFFIX = "+ema"  # the report row of a run's averaged weights (--ema)
RESULTS = "results.json"


# ------------------------------------------------------------------------------------------- checks


def check_data(exp: Experiment, data_dir: str | None) -> None:
    """Fail before any output when the experiment's data set is not here, saying how to get it."""
    try:
        load_data(exp.settings.dataset, "test", data_dir, limit=1, image_size=exp.settings.image_size)
    except UsageError as e:
        hint = ""
        if exp.scale == "paper" and exp.smoke_dataset not in (None, exp.settings.dataset):
            hint = (f"; to check the pipeline without it, run `iat reproduce {exp.name} --scale smoke`, "
                    f"which uses {exp.smoke_dataset}")
        raise UsageError(f"{exp.name} needs the {exp.settings.dataset} data set: {e}{hint}") from None


def manifest(exp: Experiment) -> dict:
    return {"experiment": exp.name, "scale": exp.scale, "settings": dataclasses.asdict(exp.settings)}


def check_out(out: Path, exp: Experiment) -> None:
    """Refuse an --out that cannot be a directory or holds something else: another experiment, scale, settings."""
    outdir.check_out_dir(out)
    if not out.is_dir() or files.is_empty(out):  # a lock file or a killed first write's temporaries: new
        return
    path = out / MANIFEST
    if not path.is_file():
        raise UsageError(f"--out {out} is not empty and holds no {MANIFEST}: it is not a reproduce directory; "
                         "choose a new or empty directory")
    try:
        old = json.loads(path.read_text())
    except (ValueError, RecursionError, OSError):  # not JSON, not UTF-8, absurdly nested, unreadable
        raise UsageError(f"{path} is damaged; choose another --out or delete {out}") from None
    if not isinstance(old, dict) or not isinstance(old.get("settings", {}), dict):
        raise UsageError(f"{path} is not a reproduce manifest (damaged); choose another --out or delete {out}")
    new = manifest(exp)
    if (old.get("experiment"), old.get("scale")) != (new["experiment"], new["scale"]):
        raise UsageError(f"--out {out} holds the {old.get('scale')}-scale runs of {old.get('experiment')!r}, not "
                         f"{exp.name!r} at {exp.scale} scale; choose another --out")
    # a setting an older directory does not record had its default then; its "on"/"off" switches are booleans now
    saved = {**DEFAULTS, **{k: old_switch(k, v) for k, v in old.get("settings", {}).items()}}
    changed = [k for k in new["settings"] if saved.get(k) != new["settings"][k]]
    if changed:
        k = changed[0]
        raise UsageError(f"--out {out} was made with {k} = {saved.get(k)!r}, but this call asks for "
                         f"{new['settings'][k]!r} ({exp.source.name}); choose another --out")


def check_eval_procs(procs: int, device: torch.device) -> None:
    if isinstance(procs, bool) or not isinstance(procs, int) or procs < 1:
        raise UsageError(f"--eval-procs {procs!r} must be a positive integer")
    if procs > 1 and device.type == "cuda" and procs > torch.cuda.device_count():
        raise UsageError(f"--eval-procs {procs}: one GPU per process, and this machine has "
                         f"{torch.cuda.device_count()}; give at most that many")


def check_seeds(seeds: int) -> None:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= 1000:
        raise UsageError(f"--seeds {seeds!r} is outside [1, 1000]")


# ---------------------------------------------------------------------------------------- the tasks


def plan(exp: Experiment, out: Path, *, seeds: int, device: str, data_dir: str | None,
         progress: bool, eval_procs: int = 1) -> list[RunTask]:
    """One task per (method or variant, seed), seed-major (a whole table for seed 0 comes first), in the order
    of `entries`. A run directory that holds other options is refused here, before anything trains."""
    s = exp.settings
    whitebox = whitebox_plan(s, eval_procs)
    probe = probe_config(exp) if exp.kind == "probe" else None
    tasks = []
    for seed in range(seeds):
        for entry in exp.methods:
            cfg = exp.run_config(entry, seed, device, data_dir, extra={"experiment": exp.name, "scale": exp.scale})
            run_dir = out / f"{entry}-seed{seed}"
            tasks.append(RunTask(cfg, run_dir, out, done=run_dir.is_dir() and is_complete(cfg, run_dir),
                                 whitebox=whitebox, norms=exp.kind == "norms", probe=probe, progress=progress))
    return tasks


def entries(exp: Experiment, seeds: int) -> list[str]:
    """The method or variant of each of plan's tasks, in its order."""
    return [entry for _ in range(seeds) for entry in exp.methods]


def weights_rows(entry: str, whitebox: dict) -> list[tuple[str, dict]]:
    """One run's white-box measurement as report rows: the entry's own, and ENTRY+ema for a run with averaged
    weights (one run gives both: `--ema` leaves the trained weights as they are without it)."""
    by_weights = whitebox.get("results_by_weights")
    if not by_weights:
        return [(entry, whitebox)]
    rows = []
    for which, name in (("last", entry), ("ema", f"{entry}{EMA_SUFFIX}")):
        row = {k: v for k, v in whitebox.items() if k not in ("results_by_weights", "autoattack_by_weights")}
        row["results"], row["weights"] = by_weights[which], which
        if "autoattack_by_weights" in whitebox:
            row["autoattack"] = whitebox["autoattack_by_weights"][which]
        rows.append((name, row))
    return rows


def launch(launcher: Launcher, tasks: list[RunTask]) -> list[dict]:
    """Run the tasks; results in the tasks' order. A pool starts the slowest (adversarial) first so it drains
    evenly; one job keeps the seed-major order."""
    order = list(range(len(tasks)))
    if launcher.jobs > 1:
        order.sort(key=lambda i: not tasks[i].adversarial)
    for i in order:
        verb = "already trained" if tasks[i].done else "training"
        log.info("[%d/%d] %s: %s", i + 1, len(tasks), tasks[i].run_dir, verb)
    if launcher.jobs > 1:  # no progress bars from several processes at once
        tasks = [dataclasses.replace(t, progress=False) for t in tasks]
    results = launcher.map(run_task, [tasks[i] for i in order])
    by_task = dict(zip(order, results))
    return [by_task[i] for i in range(len(tasks))]


# -------------------------------------------------------------------------------------------- main


def run_experiment(exp: Experiment, out: Path, *, seeds: int = 1, device: str = "auto", data_dir: str | None = None,
                   progress: bool = True, launcher: Launcher | None = None, eval_procs: int = 1) -> dict:
    """Check everything, then train and measure `exp` into `out`; return results.json's content (unwritten).

    eval_procs > 1: each run's AutoAttack measurement runs after training, from this process, under torchrun
    on that many processes (see measure_autoattack), one run after another."""
    check_seeds(seeds)
    resolved = resolve_device(device)
    check_eval_procs(eval_procs, resolved)
    check_data(exp, data_dir)
    check_out(out, exp)
    launcher = launcher or make_launcher("local", None, device)
    tasks = plan(exp, out, seeds=seeds, device=device, data_dir=data_dir, progress=progress, eval_procs=eval_procs)

    started = time.perf_counter()
    outdir.make_dir(out)
    files.write_json(out / MANIFEST, manifest(exp))
    log.info("%s at %s scale, %d seed(s), into %s", exp.name, exp.scale, seeds, out)
    measured = launch(launcher, tasks)
    for task, r in zip(tasks, measured):  # --eval-procs: every GPU is free now, and this process sees them all
        wb = task.whitebox
        if wb is not None and wb.autoattack_limit and wb.autoattack_procs > 1:
            with outdir.lock_dir(task.run_dir, "run directory"):
                r["whitebox"] = with_autoattack(task, r["whitebox"])
    names = entries(exp, seeds)
    runs = {m: [t.run_dir for t, n in zip(tasks, names) if n == m] for m in exp.methods}

    def per_seed(what: str) -> dict[str, list[dict]]:
        return {m: [r[what] for n, r in zip(names, measured) if n == m] for m in exp.methods}

    ours = {}
    if exp.settings.attacks:
        rows: dict[str, list[dict]] = {}
        for name, r in zip(names, measured):
            for row, wb in weights_rows(name, r["whitebox"]):
                rows.setdefault(row, []).append(wb)
        ours["whitebox"] = whitebox_summary(exp, rows)
    if exp.kind == "norms":
        ours["norms"] = norms_summary(out, runs, per_seed("norms"))
    elif exp.kind == "probe":
        ours["probe"] = probe_summary(exp, out, runs, per_seed("probe"))
    elif exp.kind in ROBUSTNESS:
        ours[exp.kind.replace("-", "_")] = measure_robustness(exp, out, runs, seeds=seeds, device=device,
                                                              data_dir=data_dir, progress=progress)
    return {
        "experiment": exp.name, "title": exp.title, "kind": exp.kind, "scale": exp.scale,
        "config_file": str(exp.source), "seeds": list(range(seeds)), "methods": exp.methods,
        "settings": dataclasses.asdict(exp.settings),
        "substitutions": [{"setting": k, "paper": p, "this_run": v} for k, p, v in exp.substitutions()],
        "runs": {m: [str(r.relative_to(out)) for r in dirs] for m, dirs in runs.items()},
        "trained": [str(t.run_dir) for t in tasks if not t.done], "ours": ours, "paper": paper_entry(exp.name),
        "published": published_entry(exp.name), "variants": exp.variants,
        "notes": exp.notes, "seconds": round(time.perf_counter() - started, 1),
        "train_seconds": round(train_seconds([t.run_dir for t in tasks]), 1),
        "device": str(resolved), "jobs": launcher.jobs,
        "threads": 1 if launcher.jobs > 1 else torch.get_num_threads(),  # per run
        "torch_version": torch.__version__, "iat_version": __version__,
    }


def train_seconds(run_dirs: list[Path]) -> float:
    """Training time of the runs, from their metrics.jsonl (epochs trained by earlier calls included)."""
    total = 0.0
    for run in run_dirs:
        path = run / files.METRICS
        if path.is_file():
            try:
                rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
                total += sum(float(r.get("seconds", 0.0)) for r in rows)
            except (ValueError, RecursionError, TypeError, AttributeError):  # informative only: say so, go on
                log.warning("%s is damaged (not one JSON object per line); its training time is not counted", path)
    return total


def reproduce(name: str, out: str | Path | None = None, *, seeds: int = 1, scale: str = "paper",
              device: str = "auto", data_dir: str | None = None, progress: bool = True,
              launcher: str = "local", jobs: int | None = None, ray_address: str | None = None,
              runs_per_gpu: int = 1, eval_procs: int = 1) -> dict:
    """Train, measure and report experiment `name` (a table, fig1, probe, or a .toml file) into `out`.

    `jobs` runs that many runs at once, each in its own single-threaded process (None: one per CPU core,
    1 on a GPU). `eval_procs` shares each AutoAttack measurement among that many processes (torchrun) after
    training. Returns results.json's content. See the module docstring for what a second call does.
    """
    exp = load_experiment(name, scale)
    out = Path(out) if out is not None else Path(f"reproduce-{exp.name}")
    results = run_experiment(exp, out, seeds=seeds, device=device, data_dir=data_dir, progress=progress,
                             launcher=make_launcher(launcher, jobs, device, ray_address, runs_per_gpu),
                             eval_procs=eval_procs)
    files.write_json(out / RESULTS, results)
    write_report(results, out)
    return results
