"""`iat demo`: the paper's white-box table (Tables 1-4) at CPU scale on Fashion-MNIST.

Six methods, the same budget each (architecture, epochs, data, schedule), evaluated on the full
10,000 test images against FGSM, PGD-7 and PGD-20. The defaults below were chosen so that the whole
demo (two seeds) runs in under 20 minutes on a 2-core CPU; see README for the table they give.

Why this regime: the paper's claim is about recovering the clean error that PGD training costs, so
the demo should make that cost large. On the paper's Fashion-MNIST network (mlp6, eps 0.1), measured
with one seed (clean / PGD-20 error, %, first 2,000 test images):
    10,000 images x 20 epochs: ERM 14.2, PGD 16.8 / 36.1, IAT-Mixup 16.6 / 39.6, IAT-MM 17.2 / 39.3
    60,000 images x 4 epochs:  ERM 11.5, PGD 16.0 / 33.9, IAT-Mixup 16.1 / 38.0, IAT-MM 16.3 / 36.8
    60,000 images x 8 epochs:  ERM 10.9, PGD 14.6 / 32.7, IAT-Mixup 14.8 / 35.7, IAT-MM 14.9 / 34.9
All the training data gives PGD training its largest clean-error cost (4-5 points vs 2.6), and at
equal cost in time 5 epochs of 60,000 images fit two seeds into the budget.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from iat import runio
from iat.config import TrainConfig
from iat.errors import UsageError
from iat.evaluate import evaluate_run
from iat.methods import METHODS
from iat.report import ATTACK_COLUMNS, mean_std, whitebox_table
from iat.train import train
from iat.units import format_eps

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    dataset: str = "fashion-mnist"
    arch: str = "mlp6"  # the paper's own Fashion-MNIST network (Section 4.4)
    width: int | None = None  # None: the architecture's own (512 for mlp6)
    epochs: int = 5  # with all 60,000 images; see the module docstring for why
    train_size: int | None = None  # None: all 60,000 training images
    batch_size: int = 64  # the paper's
    lr: float = 0.1
    eps: float = 0.1  # common on Fashion-MNIST (~25/255)
    step_size: float = 0.025  # eps / 4, as 2/255 is to 8/255
    attack_steps: int = 7
    test_size: int | None = None  # None: all 10,000 test images
    device: str = "auto"
    data_dir: str | None = None

    def train_config(self, method: str, seed: int) -> TrainConfig:
        return TrainConfig(method=method, dataset=self.dataset, arch=self.arch, width=self.width,
                           epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, eps=self.eps,
                           step_size=self.step_size, attack_steps=self.attack_steps, seed=seed,
                           device=self.device, data_dir=self.data_dir, train_size=self.train_size,
                           extra={"experiment": "demo"}).validate()


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
        lines.append(f"{METHODS[m].label}: clean {clean:.2f}% recovers {100 * recovered:.0f}% of that cost; "
                     f"PGD-20 error {d_robust:+.2f} points vs PGD training: {verdict}.")
    return lines


def _finished_eval(cfg: DemoConfig, run_dir: Path) -> dict | None:
    """eval.json of an earlier call, if it is newer than the weights and asked the same questions."""
    path, weights = run_dir / runio.EVAL, run_dir / runio.WEIGHTS
    if not path.is_file() or path.stat().st_mtime_ns < weights.stat().st_mtime_ns:
        return None
    try:
        report = runio.read_json(path)
    except UsageError:
        return None
    same = (list(report.get("results", {})) == list(ATTACK_COLUMNS) and report.get("eps") == cfg.eps
            and report.get("step_size") == cfg.step_size and report.get("restarts", 1) == 1
            and report.get("n_examples") == _test_size(cfg))
    return report if same else None


def _test_size(cfg: DemoConfig) -> int:
    from iat.data import load_data

    return len(load_data(cfg.dataset, "test", cfg.data_dir, limit=cfg.test_size)[1])


def _train_and_evaluate(cfg: DemoConfig, method: str, seed: int, run_dir: Path, progress: bool,
                        threads: int | None) -> dict:
    """One (method, seed) cell: train (resuming or skipping a finished run), then evaluate."""
    if threads is not None:
        torch.set_num_threads(threads)
    train(cfg.train_config(method, seed), run_dir, resume=True, progress=progress)
    done = _finished_eval(cfg, run_dir)
    if done is not None:
        return done
    return evaluate_run(run_dir, list(ATTACK_COLUMNS), eps=cfg.eps, step_size=cfg.step_size, limit=cfg.test_size,
                        device=cfg.device, data_dir=cfg.data_dir, progress=progress)


def default_jobs(device: str) -> int:
    """On a CPU, one single-threaded process per core beats one process using every core for
    models this small (measured: benchmarks/demo_parallel.py); on a GPU, one process."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return 1
    return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 6))


def run_demo(cfg: DemoConfig, out: str | Path, seeds: int = 1, methods: list[str] | None = None,
             progress: bool = True, jobs: int | None = None) -> dict:
    """Train and evaluate every method for every seed under `out`; write results.json and table.md.

    `jobs` > 1 runs that many (method, seed) cells at once, each in its own single-threaded process.
    """
    out = Path(out)
    methods = methods or list(METHODS)
    for m in methods:  # validate everything before any directory is created
        cfg.train_config(m, 0)
    jobs = jobs or default_jobs(cfg.device)
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    attacks = list(ATTACK_COLUMNS)
    cells = [(m, seed) for seed in range(seeds) for m in methods]
    if jobs == 1:
        reports = [_train_and_evaluate(cfg, m, seed, out / f"{m}-seed{seed}", progress, None) for m, seed in cells]
    else:
        import multiprocessing

        log.info("demo: %d runs, %d at a time, one thread each", len(cells), jobs)
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            # the adversarial runs take ~8x longer: start them first so the pool drains evenly
            order = sorted(cells, key=lambda c: not METHODS[c[0]].adversarial)
            futures = {c: pool.submit(_train_and_evaluate, cfg, c[0], c[1], out / f"{c[0]}-seed{c[1]}", False, 1)
                       for c in order}
            reports = []
            for c in cells:
                reports.append(futures[c].result())
                log.info("demo: %s seed %d done (%.0fs)", c[0], c[1], time.perf_counter() - started)
    errors: dict[str, dict[str, list[float]]] = {m: {a: [] for a in attacks} for m in methods}
    for (method, _), report in zip(cells, reports):
        for a in attacks:
            errors[method][a].append(report["results"][a]["error"])
    seconds = time.perf_counter() - started
    summary = {m: {a: mean_std(v) for a, v in errs.items()} for m, errs in errors.items()}
    results = {"dataset": cfg.dataset, "seeds": list(range(seeds)), "methods": summary,
               "config": dataclasses.asdict(cfg), "seconds": round(seconds, 1), "jobs": jobs,
               "torch_version": torch.__version__}
    table = whitebox_table(summary, {m: METHODS[m].label for m in methods}, attacks)
    header = (f"# iat demo: {cfg.dataset}, {cfg.arch}, {cfg.epochs} epochs on "
              f"{cfg.train_size or 'all'} training images, eps {format_eps(cfg.eps)}, "
              f"PGD step {format_eps(cfg.step_size)}, {seeds} seed(s)\n\n"
              f"Error in % on the test split (mean ± std over seeds). "
              f"Wall time of this call {seconds / 60:.1f} min.\n\n")
    claim = claim_check(summary)
    results["claim"] = claim
    runio.write_json(out / "results.json", results)
    footer = "\n" + "\n".join(f"- {line}" for line in claim) + "\n" if claim else ""
    runio.atomic_write_bytes(out / "table.md", (header + table + "\n" + footer).encode())
    results["table"] = table
    return results
