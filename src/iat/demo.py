"""`iat demo`: the paper's white-box table (Tables 1-4) at CPU scale on Fashion-MNIST.

The demo is an experiment file, src/iat/experiments/demo.toml (its settings and why they were chosen),
run by the same runner as `iat reproduce` (iat.reproduce.runner). This module only turns the runner's
numbers into the demo's files: results.json, table.md and tradeoff.png (interfaces.md), and the claim they show.
"""

from __future__ import annotations

from pathlib import Path

import torch

from iat.analysis.plots import plot_tradeoff
from iat.report import method_label, whitebox_table
from iat.reproduce.experiment import DEMO, Experiment, load_experiment
from iat.reproduce.launch import make_launcher
from iat.reproduce.runner import run_experiment
from iat.reproduce.tasks import AUTOATTACK_SKIPPED
from iat.rundir import files
from iat.units import format_eps


def demo_experiment(methods: list[str] | None = None, **settings) -> Experiment:
    """experiments/demo.toml with the command line's settings over it; `eps` and `step_size` set the
    training attack and the evaluation's alike."""
    for key in ("eps", "step_size"):
        if key in settings:
            settings[f"eval_{key}"] = settings[key]
    return load_experiment(DEMO).override(methods, **settings)


def claim_check(summary: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """The paper's claim in numbers: PGD training's clean-error cost, and how much of it IAT recovers
    at what change in PGD-20 error. Says plainly when the claim does not show."""
    if not {"erm", "pgd"} <= summary.keys():
        return []
    base, pgd = summary["erm"]["clean"]["mean"], summary["pgd"]["clean"]["mean"]
    cost = pgd - base
    lines = [f"PGD training raised clean error from {base:.2f}% to {pgd:.2f}% ({cost:+.2f} points)."]
    for m in ("iat-mixup", "iat-manifold-mixup"):
        if m not in summary or cost <= 0:
            continue
        clean, robust = summary[m]["clean"]["mean"], summary[m]["pgd20"]["mean"]
        recovered = (pgd - clean) / cost
        d_robust = robust - summary["pgd"]["pgd20"]["mean"]
        verdict = ("the paper's claim shows here" if recovered >= 0.5 and d_robust <= 1.0
                   else "the paper's claim does not show here")
        recovery = (f"recovers {100 * recovered:.0f}% of that cost" if recovered >= 0 else
                    f"recovers none of that cost ({clean - pgd:.2f} points above PGD training)")
        lines.append(f"{method_label(m)}: clean {clean:.2f}% {recovery}; "
                     f"PGD-20 error {d_robust:+.2f} points vs PGD training: {verdict}.")
    return lines


def autoattack_claims(summary: dict, autoattack: dict) -> list[str]:
    """What AutoAttack does to each method's robust error against PGD-20, both on the same first N test images."""
    n, same = autoattack["n_examples"], autoattack["same_images"]
    lines = []
    for m, cells in summary.items():
        name, pgd, aa = method_label(m, short=True), same[m]["pgd20"]["mean"], cells["autoattack"]["mean"]
        if aa > pgd:
            what = f"raises {name}'s robust error from {pgd:.1f}% (PGD-20) to {aa:.1f}% ({aa - pgd:+.1f} points)"
        elif aa == pgd:
            what = f"leaves {name}'s robust error at {aa:.1f}%, as PGD-20 found it,"
        else:  # the four attacks of AutoAttack do not include PGD-20, so this can happen by an image or two
            what = f"finds {name}'s robust error at {aa:.1f}%, below PGD-20's {pgd:.1f}%,"
        lines.append(f"AutoAttack {what} on the first {n:,} test images.")
    if "pgd" in summary:
        for m in ("iat-mixup", "iat-manifold-mixup"):
            if m in summary:
                d_pgd = same[m]["pgd20"]["mean"] - same["pgd"]["pgd20"]["mean"]
                d_aa = summary[m]["autoattack"]["mean"] - summary["pgd"]["autoattack"]["mean"]
                lines.append(f"{method_label(m, short=True)} vs PGD training, robust error on those images: "
                             f"{d_pgd:+.1f} points under PGD-20, {d_aa:+.1f} under AutoAttack.")
    return lines


def autoattack_note(s, autoattack: dict | None) -> str:
    if autoattack:
        return (f"AutoAttack: the standard version by its authors ({', '.join(autoattack['components'])}; "
                f"{autoattack['package']}), eps {format_eps(autoattack['eps'])}, on the first "
                f"{autoattack['n_examples']:,} test images (it is slow); the lines below compare it with PGD-20 "
                f"on those same images.\n\n")
    return f"{AUTOATTACK_SKIPPED}.\n\n" if s.autoattack_limit else ""


def public(cells: dict) -> dict:
    """interfaces.md's {"mean", "std"} per cell, without the per-seed values the runner keeps."""
    return {a: {"mean": c["mean"], "std": c["std"]} for a, c in cells.items()}


def run_demo(exp: Experiment, out: str | Path, *, seeds: int = 1, device: str = "auto",
             data_dir: str | None = None, progress: bool = True, launcher: str = "local",
             jobs: int | None = None, ray_address: str | None = None, runs_per_gpu: int = 1) -> dict:
    """Train and evaluate every method for every seed under `out`; write results.json, table.md, tradeoff.png.

    `jobs` > 1 runs that many (method, seed) runs at once, each in its own single-threaded process.
    """
    out = Path(out)
    run = run_experiment(exp, out, seeds=seeds, device=device, data_dir=data_dir, progress=progress,
                         launcher=make_launcher(launcher, jobs, device, ray_address, runs_per_gpu))
    s, seconds = exp.settings, run["seconds"]
    summary = {m: public(cells) for m, cells in run["ours"]["whitebox"]["methods"].items()}
    results = {"dataset": s.dataset, "seeds": run["seeds"], "methods": summary, "config": run["settings"],
               "seconds": seconds, "jobs": run["jobs"], "torch_version": torch.__version__}
    autoattack = run["ours"]["whitebox"].get("autoattack")
    attacks = list(s.attacks) + (["autoattack"] if autoattack else [])
    if autoattack:
        autoattack = {**autoattack, "same_images": {m: public(c) for m, c in autoattack["same_images"].items()}}
        results["autoattack"] = autoattack
    n_aa = autoattack["n_examples"] if autoattack else None
    cells = run["ours"]["whitebox"]["methods"]  # with the per-seed values: one seed prints its number alone
    table = whitebox_table(cells, {m: method_label(m) for m in cells}, attacks, autoattack_n=n_aa)
    header = (f"# iat demo: {s.dataset}, {s.arch}, {s.epochs} epochs on "
              f"{s.train_size or 'all'} training images, eps {format_eps(s.eps)}, "
              f"PGD step {format_eps(s.step_size)}, {seeds} seed(s)\n\n"
              f"Error in % on the test split ({'mean ± sample std over seeds' if seeds > 1 else 'one seed'}). "
              f"Wall time of this call {seconds / 60:.1f} min.\n\n" + autoattack_note(s, autoattack))
    claim = claim_check(summary) + (autoattack_claims(summary, autoattack) if autoattack else [])
    results["claim"] = claim
    files.write_json(out / "results.json", results)
    footer = "\n" + "\n".join(f"- {line}" for line in claim) + "\n" if claim else ""
    files.atomic_write_bytes(out / "table.md", (header + table + "\n" + footer).encode())
    plot_tradeoff(summary, out / "tradeoff.png", f"iat demo: {s.dataset}, {s.arch}, {s.epochs} epochs, "
                  f"eps {format_eps(s.eval_eps, 'short')}, {seeds} seed(s)", autoattack_n=n_aa)
    results["table"] = table
    return results
