"""Run one experiment: train every run it needs, measure them, and write results.json and report.md.

Calling it again continues where it stopped: finished runs are skipped, interrupted ones resume
from their checkpoint (`iat.train.train(..., resume=True)`), and every measurement is cached in
OUT/cache/ under a key made of its inputs and the size and time of the run's weights, so a second
call on a finished experiment trains and measures nothing and only rewrites the report.

Layout of OUT:
    experiment.json         which experiment and scale this directory holds (checked on every call)
    METHOD-seedK/           one run directory per method and seed (`iat train`'s files)
    cache/                  measurements, one JSON file each
    results.json, report.md and the plots; norms.json / probe.json / sweep-*.json / transfer.json
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

import iat
from iat import runio
from iat.errors import UsageError
from iat.report import mean_std
from iat.reproduce.experiment import Experiment, load_experiment
from iat.reproduce.paper import paper_entry

log = logging.getLogger(__name__)

MANIFEST = "experiment.json"
RESULTS = "results.json"
REPORT = "report.md"
ROBUSTNESS_KINDS = {"transfer": "transfer_matrix", "sweep-eps": "sweep_eps", "sweep-steps": "sweep_steps"}


# ------------------------------------------------------------------------------------------- checks


def check_data(exp: Experiment, data_dir: str | None) -> None:
    """Fail before any output when the experiment's data set is not here, saying how to get it."""
    from iat.data import load_data

    try:
        load_data(exp.settings.dataset, "test", data_dir, limit=1)
    except UsageError as e:
        hint = ""
        if exp.scale == "paper":
            hint = (f"; to check the pipeline without it, run `iat reproduce {exp.name} --scale smoke`, "
                    "which uses Fashion-MNIST")
        raise UsageError(f"{exp.name} needs the {exp.settings.dataset} data set: {e}{hint}") from None


def robustness_function(kind: str) -> Callable:
    """The iat.robustness function an experiment of this kind needs."""
    from iat import robustness

    return getattr(robustness, ROBUSTNESS_KINDS[kind])


def manifest(exp: Experiment) -> dict:
    return {"experiment": exp.name, "scale": exp.scale, "settings": dataclasses.asdict(exp.settings)}


def check_out(out: Path, exp: Experiment) -> None:
    """Refuse an --out that cannot be a directory or holds something else: another experiment, scale, settings."""
    runio.check_out_dir(out)
    if not out.is_dir() or not any(out.iterdir()):
        return
    path = out / MANIFEST
    if not path.is_file():
        raise UsageError(f"--out {out} is not empty and holds no {MANIFEST}: it is not a reproduce directory; "
                         "choose a new or empty directory")
    try:
        old = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UsageError(f"{path} is damaged; choose another --out or delete {out}") from None
    new = manifest(exp)
    if (old.get("experiment"), old.get("scale")) != (new["experiment"], new["scale"]):
        raise UsageError(f"--out {out} holds the {old.get('scale')}-scale runs of {old.get('experiment')!r}, not "
                         f"{exp.name!r} at {exp.scale} scale; choose another --out")
    changed = [k for k in new["settings"] if old.get("settings", {}).get(k) != new["settings"][k]]
    if changed:
        k = changed[0]
        raise UsageError(f"--out {out} was made with {k} = {old.get('settings', {}).get(k)!r}, but "
                         f"{exp.source.name} now says {new['settings'][k]!r}; choose another --out")


# ------------------------------------------------------------------------------------------ caching


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


def train_seconds(run_dirs: list[Path]) -> float:
    """Training time of the runs, from their metrics.jsonl (epochs trained by earlier calls included)."""
    total = 0.0
    for run in run_dirs:
        path = run / runio.METRICS
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    total += json.loads(line).get("seconds", 0.0)
    return total


def stat(values: list[float]) -> dict:
    return {**mean_std(values), "values": values}


# ----------------------------------------------------------------------------------------- training


def train_runs(exp: Experiment, out: Path, seeds: int, device: str, data_dir: str | None,
               progress: bool) -> tuple[dict[str, list[Path]], list[str]]:
    """Train (or resume, or skip) every method for every seed; return {method: [run dir per seed]}."""
    from iat.train import is_complete, train

    runs: dict[str, list[Path]] = {m: [] for m in exp.methods}
    trained: list[str] = []
    total, k = seeds * len(exp.methods), 0
    for seed in range(seeds):  # seed-major: a whole table for seed 0 comes first
        for method in exp.methods:
            k += 1
            cfg = exp.settings.train_config(method, seed, device, data_dir,
                                            extra={"experiment": exp.name, "scale": exp.scale})
            run_dir = out / f"{method}-seed{seed}"
            if run_dir.is_dir() and is_complete(cfg, run_dir):
                log.info("[%d/%d] %s: already trained", k, total, run_dir)
            else:
                log.info("[%d/%d] training %s (%s, seed %d)", k, total, run_dir, method, seed)
                train(cfg, run_dir, resume=True, progress=progress)
                trained.append(str(run_dir))
            runs[method].append(run_dir)
    return runs, trained


# ---------------------------------------------------------------------------------------- measuring


def measure_whitebox(exp: Experiment, out: Path, runs: dict[str, list[Path]], device: str,
                     data_dir: str | None, progress: bool) -> dict:
    from iat.evaluate import evaluate_run

    s = exp.settings
    methods, n_examples = {}, None
    for method, dirs in runs.items():
        errors: dict[str, list[float]] = {a: [] for a in s.attacks}
        for run in dirs:
            key = {"run": str(run), "weights": fingerprint(run), "attacks": s.attacks, "eps": s.eval_eps,
                   "step_size": s.eval_step_size, "limit": s.test_size}
            report = cached(out, f"eval-{run.name}", key, lambda run=run: evaluate_run(
                run, s.attacks, eps=s.eval_eps, step_size=s.eval_step_size, limit=s.test_size, device=device,
                data_dir=data_dir, progress=progress))
            n_examples = report["n_examples"]
            for a in s.attacks:
                errors[a].append(report["results"][a]["error"])
        methods[method] = {a: stat(v) for a, v in errors.items()}
    return {"n_examples": n_examples, "eps": s.eval_eps, "step_size": s.eval_step_size, "methods": methods}


def measure_norms(exp: Experiment, out: Path, runs: dict[str, list[Path]]) -> dict:
    from iat.analysis.norms import run_norms

    per_run, methods = {}, {}
    for method, dirs in runs.items():
        rows_per_seed = []
        for run in dirs:
            rows = cached(out, f"norms-{run.name}", {"run": str(run), "weights": fingerprint(run)},
                          lambda run=run: run_norms(run))
            per_run[str(run)] = rows
            rows_per_seed.append(rows)
        methods[method] = [
            {"layer": layer["layer"], "shape": layer["shape"],
             "frobenius": stat([rows[i]["frobenius"] for rows in rows_per_seed]),
             "spectral": stat([rows[i]["spectral"] for rows in rows_per_seed])}
            for i, layer in enumerate(rows_per_seed[0])
        ]
    runio.write_json(out / "norms.json", {"runs": per_run})
    return {"methods": methods, "claims": norm_claims(methods)}


def norm_claims(methods: dict[str, list[dict]]) -> list[dict]:
    """Section 4.4's three claims, checked on the per-layer means over seeds."""
    if "erm" not in methods or "pgd" not in methods:
        return []
    claims = []

    def mean(method, key):
        return [layer[key]["mean"] for layer in methods[method]]

    n = len(methods["erm"])
    fro_up = sum(p > e for p, e in zip(mean("pgd", "frobenius"), mean("erm", "frobenius")))
    claims.append({"claim": "Adversarial training increases the Frobenius norm of the weight matrices across all "
                            "the layers.", "holds": fro_up == n,
                   "detail": f"PGD's Frobenius norm is above ERM's in {fro_up} of {n} layers"})
    spec_up = sum(p > e for p, e in zip(mean("pgd", "spectral"), mean("erm", "spectral")))
    claims.append({"claim": "Adversarial training increases the spectral norm of the majority of the layers.",
                   "holds": spec_up > n / 2,
                   "detail": f"PGD's spectral norm is above ERM's in {spec_up} of {n} layers"})

    def distance(method):  # mean relative distance to ERM's norms over layers and both norms
        d = [abs(a - b) / b for key in ("frobenius", "spectral")
             for a, b in zip(mean(method, key), mean("erm", key)) if b > 0]
        return sum(d) / max(len(d), 1)

    for method in (m for m in methods if m.startswith("iat-")):
        d_iat, d_pgd = distance(method), distance("pgd")
        claims.append({"claim": f"{method} brings these norms closer to their values under normal training than "
                                "adversarial training does.", "holds": d_iat < d_pgd,
                       "detail": f"mean relative distance to ERM's norms: {method} {d_iat:.3f}, PGD {d_pgd:.3f}"})
    return claims


def measure_probe(exp: Experiment, out: Path, runs: dict[str, list[Path]], device: str,
                  data_dir: str | None) -> dict:
    from iat.analysis.probe import ProbeConfig, probe_run

    s = exp.settings
    pcfg = ProbeConfig(n=s.probe_n, epochs=s.probe_epochs, hidden=s.probe_hidden, lr=s.probe_lr,
                       batch_size=s.probe_batch_size).validate()
    per_run, methods = {}, {}
    for method, dirs in runs.items():
        results = []
        for run in dirs:
            key = {"run": str(run), "weights": fingerprint(run), "probe": dataclasses.asdict(pcfg)}
            r = cached(out, f"probe-{run.name}", key, lambda run=run: probe_run(run, pcfg, device, data_dir))
            per_run[str(run)] = r
            results.append(r)
        methods[method] = {"accuracy": stat([r["accuracy"] for r in results]),
                           "n_examples": results[0]["n_examples"], "dim": results[0]["dim"]}
    runio.write_json(out / "probe.json", {**dataclasses.asdict(pcfg), "runs": per_run})
    return {"config": dataclasses.asdict(pcfg), "methods": methods}


def measure_robustness(exp: Experiment, out: Path, runs: dict[str, list[Path]], seeds: int, device: str,
                       data_dir: str | None, progress: bool) -> dict:
    """Tables 5-7 with iat.robustness, one call per seed (each seed's runs attack each other)."""
    s = exp.settings
    fn = robustness_function(exp.kind)
    method_of = {}
    for method, dirs in runs.items():
        for run in dirs:
            method_of[str(run)] = method
            method_of[str(run.resolve())] = method
    common = {"step_size": s.eval_step_size, "limit": s.test_size, "device": device, "data_dir": data_dir,
              "progress": progress}
    points, extra = [], {}
    for seed in range(seeds):
        seed_runs = [runs[m][seed] for m in exp.methods]
        key = {"kind": exp.kind, "runs": [str(r) for r in seed_runs], "weights": [fingerprint(r) for r in seed_runs],
               "eps": s.eval_eps_list if exp.kind != "sweep-steps" else s.eval_eps,
               "steps": s.eval_steps if exp.kind != "sweep-steps" else s.eval_steps_list,
               "step_size": s.eval_step_size, "limit": s.test_size}
        if exp.kind == "sweep-steps":
            def compute(seed_runs=seed_runs):
                return fn([str(r) for r in seed_runs], s.eval_steps_list, eps=s.eval_eps, **common)
        else:
            def compute(seed_runs=seed_runs):
                return fn([str(r) for r in seed_runs], s.eval_eps_list, steps=s.eval_steps, **common)
        result = cached(out, f"{exp.kind}-seed{seed}", key, compute)
        points += result["points"]
        extra = {k: v for k, v in result.items() if k != "points"}
    file = {"transfer": "transfer.json", "sweep-eps": "sweep-eps.json", "sweep-steps": "sweep-steps.json"}[exp.kind]
    runio.write_json(out / file, {**extra, "points": points})

    def group(fields: tuple[str, ...], convert) -> list[dict]:
        groups: dict[tuple, list[float]] = {}
        for p in points:
            groups.setdefault(convert(p), []).append(p["error"])
        return [{**dict(zip(fields, k)), **stat(v)} for k, v in groups.items()]

    if exp.kind == "transfer":
        grouped = group(("eps", "source", "target"),
                        lambda p: (p["eps"], method_of[str(p["source"])], method_of[str(p["target"])]))
        return {"steps": s.eval_steps, "step_size": s.eval_step_size, "points": grouped, "suite": extra}
    if exp.kind == "sweep-eps":
        grouped = group(("method", "eps"), lambda p: (method_of[str(p["run"])], p["eps"]))
        return {"steps": s.eval_steps, "step_size": s.eval_step_size, "points": grouped, "suite": extra}
    grouped = group(("method", "steps"), lambda p: (method_of[str(p["run"])], p["steps"]))
    return {"eps": s.eval_eps, "step_size": s.eval_step_size, "points": grouped, "suite": extra}


# -------------------------------------------------------------------------------------------- main


def reproduce(name: str, out: str | Path | None = None, seeds: int = 1, scale: str = "paper",
              device: str = "auto", data_dir: str | None = None, progress: bool = True) -> dict:
    """Train, measure and report experiment `name` (a table, fig1, probe, or a .toml file) into `out`.

    Returns results.json's content. See the module docstring for what a second call does.
    """
    from iat.reproduce.report import write_report
    from iat.train import resolve_device

    exp = load_experiment(name, scale)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= 1000:
        raise UsageError(f"--seeds {seeds!r} is outside [1, 1000]")
    out = Path(out) if out is not None else Path(f"reproduce-{exp.name}")
    resolved = resolve_device(device)
    check_data(exp, data_dir)
    if exp.kind in ROBUSTNESS_KINDS:
        robustness_function(exp.kind)
    check_out(out, exp)

    started = time.perf_counter()
    runio.make_dir(out)
    runio.write_json(out / MANIFEST, manifest(exp))
    log.info("reproduce %s at %s scale, %d seed(s), into %s", exp.name, exp.scale, seeds, out)
    runs, trained = train_runs(exp, out, seeds, device, data_dir, progress)

    ours = {}
    if exp.settings.attacks:
        ours["whitebox"] = measure_whitebox(exp, out, runs, device, data_dir, progress)
    if exp.kind == "norms":
        ours["norms"] = measure_norms(exp, out, runs)
    elif exp.kind == "probe":
        ours["probe"] = measure_probe(exp, out, runs, device, data_dir)
    elif exp.kind in ROBUSTNESS_KINDS:
        ours[exp.kind.replace("-", "_")] = measure_robustness(exp, out, runs, seeds, device, data_dir, progress)

    seconds = time.perf_counter() - started
    results = {
        "experiment": exp.name, "title": exp.title, "kind": exp.kind, "scale": exp.scale,
        "config_file": str(exp.source), "seeds": list(range(seeds)), "methods": exp.methods,
        "settings": dataclasses.asdict(exp.settings),
        "substitutions": [{"setting": k, "paper": p, "this_run": v} for k, p, v in exp.substitutions()],
        "runs": {m: [str(r.relative_to(out)) for r in dirs] for m, dirs in runs.items()},
        "trained": trained, "ours": ours, "paper": paper_entry(exp.name), "notes": exp.notes,
        "seconds": round(seconds, 1),
        "train_seconds": round(train_seconds([r for dirs in runs.values() for r in dirs]), 1),
        "device": str(resolved), "threads": torch.get_num_threads(),
        "torch_version": torch.__version__, "iat_version": iat.__version__,
    }
    runio.write_json(out / RESULTS, results)
    write_report(results, out)
    return results
