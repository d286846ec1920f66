"""Per-run measurements gathered into mean ± std over seeds, per method: what results.json calls `ours`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from iat.analysis.probe import ProbeConfig
from iat.report import stat
from iat.reproduce.experiment import Experiment
from iat.reproduce.tasks import cached, fingerprint
from iat.robustness import sweep_eps, sweep_steps, transfer_matrix
from iat.rundir import files

ROBUSTNESS = {"transfer": transfer_matrix, "sweep-eps": sweep_eps, "sweep-steps": sweep_steps}

# {method: [one measurement per seed]}
PerSeed = dict[str, list[dict]]


def whitebox_summary(exp: Experiment, reports: PerSeed) -> dict:
    s = exp.settings
    methods = {m: {a: stat([r["results"][a]["error"] for r in rs]) for a in s.attacks} for m, rs in reports.items()}
    n_examples = next(iter(reports.values()))[-1]["n_examples"]
    summary = {"n_examples": n_examples, "eps": s.eval_eps, "step_size": s.eval_step_size, "methods": methods}
    if all("autoattack" in r for rs in reports.values() for r in rs):
        summary["autoattack"] = autoattack_summary(reports, methods)
    return summary


def autoattack_summary(reports: PerSeed, methods: dict) -> dict:
    """AutoAttack's column (into `methods`) and what it was measured with, beside PGD-20 on the same images."""
    first = next(iter(reports.values()))[0]["autoattack"]
    same = {}
    for m, rs in reports.items():
        errors = {a: [r["autoattack"]["results"][a] for r in rs] for a in ("clean", "pgd20", "autoattack")}
        methods[m]["autoattack"] = stat(errors.pop("autoattack"))
        same[m] = {a: stat(v) for a, v in errors.items()}
    meta = {k: first[k] for k in ("version", "components", "n_examples", "eps", "step_size", "package")}
    # each run attacked with its own seed; its time is in OUT/cache/autoattack-RUN.json (numbers here repeat exactly)
    return {**meta, "same_images": same}


def norms_summary(out: Path, runs: dict[str, list[Path]], rows: PerSeed) -> dict:
    files.write_json(out / "norms.json", {"runs": {str(r): x for m in runs for r, x in zip(runs[m], rows[m])}})
    methods = {
        m: [{"layer": layer["layer"], "shape": layer["shape"],
             "frobenius": stat([seed[i]["frobenius"] for seed in per_seed]),
             "spectral": stat([seed[i]["spectral"] for seed in per_seed])}
            for i, layer in enumerate(per_seed[0])]
        for m, per_seed in rows.items()}
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
                       "detail": f"mean relative distance to ERM's norms: {method} {d_iat:.3%}, PGD {d_pgd:.3%}"})
    return claims


def probe_config(exp: Experiment) -> ProbeConfig:
    s = exp.settings
    return ProbeConfig(n=s.probe_n, epochs=s.probe_epochs, hidden=s.probe_hidden, lr=s.probe_lr,
                       batch_size=s.probe_batch_size).validate()


def probe_summary(exp: Experiment, out: Path, runs: dict[str, list[Path]], results: PerSeed) -> dict:
    pcfg = dataclasses.asdict(probe_config(exp))
    per_run = {str(r): x for m in runs for r, x in zip(runs[m], results[m])}
    files.write_json(out / "probe.json", {**pcfg, "runs": per_run})
    methods = {m: {"accuracy": stat([r["accuracy"] for r in rs]), "n_examples": rs[0]["n_examples"],
                   "dim": rs[0]["dim"]} for m, rs in results.items()}
    return {"config": pcfg, "methods": methods}


def measure_robustness(exp: Experiment, out: Path, runs: dict[str, list[Path]], *, seeds: int, device: str,
                       data_dir: str | None, progress: bool) -> dict:
    """Tables 5-7 with iat.robustness, one call per seed (each seed's runs attack each other)."""
    s = exp.settings
    fn = ROBUSTNESS[exp.kind]
    common = {"step_size": s.eval_step_size, "limit": s.test_size, "device": device, "data_dir": data_dir,
              "progress": progress}
    steps_sweep = exp.kind == "sweep-steps"
    points, extra = [], {}
    for seed in range(seeds):
        seed_runs = [str(runs[m][seed]) for m in exp.methods]
        key = {"kind": exp.kind, "runs": seed_runs, "weights": [fingerprint(Path(r)) for r in seed_runs],
               "eps": s.eval_eps if steps_sweep else s.eval_eps_list,
               "steps": s.eval_steps_list if steps_sweep else s.eval_steps,
               "step_size": s.eval_step_size, "limit": s.test_size}
        if steps_sweep:
            def compute(seed_runs=seed_runs):
                return fn(seed_runs, steps_list=s.eval_steps_list, eps=s.eval_eps, **common)
        else:
            def compute(seed_runs=seed_runs):
                return fn(seed_runs, eps_list=s.eval_eps_list, steps=s.eval_steps, **common)
        result = cached(out, f"{exp.kind}-seed{seed}", key, compute)
        points += result["points"]
        extra = {k: v for k, v in result.items() if k != "points"}
    files.write_json(out / f"{exp.kind}.json", {**extra, "points": points})
    head = {"eps": s.eval_eps} if steps_sweep else {"steps": s.eval_steps}
    return {**head, "step_size": s.eval_step_size, "points": group_points(exp.kind, points, runs), "suite": extra}


def group_points(kind: str, points: list[dict], runs: dict[str, list[Path]]) -> list[dict]:
    """The suite's per-run points as mean ± std over seeds, per method (or source and target method)."""
    method_of = {}
    for method, dirs in runs.items():
        for run in dirs:
            method_of[str(run)] = method
            method_of[str(run.resolve())] = method
    axis = "eps" if kind == "sweep-eps" else "steps"
    fields = ("eps", "source", "target") if kind == "transfer" else ("method", axis)

    def key(p: dict) -> tuple:
        if kind == "transfer":
            return p["eps"], method_of[str(p["source"])], method_of[str(p["target"])]
        return method_of[str(p["run"])], p[axis]

    groups: dict[tuple, list[float]] = {}
    for p in points:
        groups.setdefault(key(p), []).append(p["error"])
    return [{**dict(zip(fields, k)), **stat(v)} for k, v in groups.items()]
