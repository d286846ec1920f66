"""GPU round 2 (issue 22): what `--speed fast` costs in error, and how many runs one GPU trains at once.

Two measurements, each with real `iat train` / `iat eval` processes on Fashion-MNIST (32x32, PreActResNet18,
IAT-Mixup, PGD-7 at eps 0.1), under a time budget that fits one 8-minute GPU lease:

1. exact vs fast: `--speed exact` and `--speed fast` runs, `--seeds` seeds each, the same epochs and data;
   clean and PGD-20 error (strict fp32 evaluation either way) as mean ± sample std over the seeds. The seeds of
   one setting train side by side on the one GPU (they only share its time; each run is its own process).
2. runs per GPU: N identical `--speed fast` runs started at once (N = 1, 2, 4), the wall time until the last
   finishes, and each run's own epoch time (metrics.jsonl, start-up and compilation excluded): runs/hour and
   images/s of the GPU as a whole, as `iat reproduce --runs-per-gpu N` would see them.

    python benchmarks/gpu_round2.py --out OUT                        # on a GPU (bash benchmarks/gpu_round2.sh)
    python benchmarks/gpu_round2.py --out OUT --device cpu --quick   # the code paths on a CPU, tiny and fast

Figures go to OUT/gpu_round2.json and OUT/gpu_round2.md. Nothing is tuned toward a result: the settings are
fixed above `main` and printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STARTED = time.perf_counter()

# The fixed settings of each measurement (`--quick`: the CPU smoke version of the same code paths).
FULL = {"dataset": "fashion-mnist-32", "arch": "preactresnet18", "width": None, "batch": 64, "eps": "0.1",
        "step_size": "0.025", "compare_train": 10_000, "compare_epochs": 2, "eval_limit": 2_000,
        "concurrency_train": 20_000, "concurrency_epochs": 1, "concurrency": (1, 2, 4)}
QUICK = {**FULL, "dataset": "digits", "arch": "cnn-small", "width": 4, "batch": 32, "compare_train": 128,
         "compare_epochs": 1, "eval_limit": 64, "concurrency_train": 128, "concurrency": (1, 2)}


def left(budget: float) -> float:
    return budget - (time.perf_counter() - STARTED)


def train_command(s: dict, run: Path, *, speed: str, seed: int, train_size: int, epochs: int, device: str,
                  data_dir: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "iat", "-q", "train", "--method", "iat-mixup", "--dataset", s["dataset"], "--arch",
           s["arch"], "--epochs", str(epochs), "--train-size", str(train_size), "--batch-size", str(s["batch"]),
           "--eps", s["eps"], "--step-size", s["step_size"], "--seed", str(seed), "--speed", speed,
           "--device", device, "--out", str(run)]
    if s["width"]:
        cmd += ["--width", str(s["width"])]
    return cmd + (["--data-dir", data_dir] if data_dir else [])


def run_together(commands: list[list[str]], timeout: float) -> tuple[float, list[subprocess.CompletedProcess | str]]:
    """Start every command at once; wait for all (killing any left at `timeout`); (wall seconds, results)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for c in commands]
    results: list[subprocess.CompletedProcess | str] = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=max(1.0, timeout - (time.perf_counter() - t0)))
            results.append(subprocess.CompletedProcess(p.args, p.returncode, out))
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            results.append("timed out (budget)")
    return time.perf_counter() - t0, results


def failure(result: subprocess.CompletedProcess | str) -> str | None:
    if isinstance(result, str):
        return result
    return None if result.returncode == 0 else f"exit {result.returncode}: {result.stdout[-800:]}"


def epoch_seconds(run: Path) -> list[float]:
    return [json.loads(line)["seconds"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def exact_vs_fast(s: dict, root: Path, seeds: int, device: str, data_dir: str | None, budget: float) -> dict:
    out: dict = {}
    for speed in ("exact", "fast"):
        if left(budget) < 60:
            out[speed] = {"skipped": "time budget"}
            continue
        runs = [root / f"{speed}-seed{k}" for k in range(seeds)]
        commands = [train_command(s, run, speed=speed, seed=k, train_size=s["compare_train"],
                                  epochs=s["compare_epochs"], device=device, data_dir=data_dir)
                    for k, run in enumerate(runs)]
        wall, results = run_together(commands, left(budget) - 30)
        bad = [f for f in map(failure, results) if f]
        if bad:
            out[speed] = {"error": bad[0], "train_wall_s": round(wall, 1)}
            continue
        evals = [[sys.executable, "-m", "iat", "-q", "eval", str(run), "--attacks", "clean,pgd20", "--limit",
                  str(s["eval_limit"]), "--device", device] + (["--data-dir", data_dir] if data_dir else [])
                 for run in runs]
        eval_wall, results = run_together(evals, left(budget) - 5)
        bad = [f for f in map(failure, results) if f]
        row: dict = {"train_wall_s": round(wall, 1), "eval_wall_s": round(eval_wall, 1),
                     "epoch_s": [epoch_seconds(run) for run in runs]}
        if bad:
            out[speed] = {**row, "eval_error": bad[0]}
            continue
        for attack in ("clean", "pgd20"):
            errors = [json.loads((run / "eval.json").read_text())["results"][attack]["error"] for run in runs]
            row[attack] = errors
            row[f"{attack}_mean"] = statistics.fmean(errors)
            row[f"{attack}_std"] = statistics.stdev(errors) if len(errors) > 1 else 0.0
        out[speed] = row
    return out


def runs_per_gpu(s: dict, root: Path, device: str, data_dir: str | None, budget: float) -> dict:
    out: dict = {}
    images = s["concurrency_train"] * s["concurrency_epochs"]
    for n in s["concurrency"]:
        if left(budget) < 45:
            out[str(n)] = {"skipped": "time budget"}
            continue
        runs = [root / f"together{n}-run{k}" for k in range(n)]
        commands = [train_command(s, run, speed="fast", seed=k, train_size=s["concurrency_train"],
                                  epochs=s["concurrency_epochs"], device=device, data_dir=data_dir)
                    for k, run in enumerate(runs)]
        wall, results = run_together(commands, left(budget) - 10)
        bad = [f for f in map(failure, results) if f]
        if bad:
            out[str(n)] = {"error": bad[0], "wall_s": round(wall, 1)}
            continue
        slowest_epochs = max(sum(epoch_seconds(run)) for run in runs)
        out[str(n)] = {"wall_s": round(wall, 1), "runs_per_hour_wall": round(n * 3600 / wall, 1),
                       "slowest_training_s": round(slowest_epochs, 2),
                       "images_per_s_training": round(n * images / slowest_epochs, 1)}
    return out


def table(results: dict) -> str:
    s, lines = results["settings"], []
    lines += [f"## exact vs fast: {s['dataset']}, {s['arch']}, IAT-Mixup PGD-7 eps {s['eps']}, "
              f"{s['compare_train']} images x {s['compare_epochs']} epochs, batch {s['batch']}, "
              f"{results['seeds']} seeds; error (%) on {s['eval_limit']} test images, strict fp32 evaluation", "",
              "| speed | clean | PGD-20 | train wall (s, seeds together) |", "|---|---|---|---|"]
    for speed, row in results["exact_vs_fast"].items():
        if "clean_mean" in row:
            lines.append(f"| {speed} | {row['clean_mean']:.2f} ± {row['clean_std']:.2f} | "
                         f"{row['pgd20_mean']:.2f} ± {row['pgd20_std']:.2f} | {row['train_wall_s']} |")
        else:
            lines.append(f"| {speed} | {row} | | |")
    lines += ["", f"## runs per GPU: `--speed fast` runs of {s['concurrency_train']} images x "
              f"{s['concurrency_epochs']} epoch(s), started together", "",
              "| runs at once | wall (s) | runs/hour (wall) | training images/s of the GPU |", "|---|---|---|---|"]
    for n, row in results["runs_per_gpu"].items():
        if "wall_s" in row and "error" not in row:
            lines.append(f"| {n} | {row['wall_s']} | {row['runs_per_hour_wall']} | {row['images_per_s_training']} |")
        else:
            lines.append(f"| {n} | {row} | | |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu-round2-out")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny settings: the code paths in seconds on a CPU")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST's idx files (default: iat's search path)")
    p.add_argument("--budget", type=float, default=420.0, help="seconds after which no new work starts")
    p.add_argument("--skip", default="", help="comma-separated: exact-vs-fast, runs-per-gpu")
    args = p.parse_args()
    settings = QUICK if args.quick else FULL
    skip = set(filter(None, args.skip.split(",")))
    root = Path(tempfile.mkdtemp(prefix="iat-round2-"))
    results = {"settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
               "seeds": args.seeds, "device": args.device, "exact_vs_fast": {}, "runs_per_gpu": {}}
    if "exact-vs-fast" not in skip:
        results["exact_vs_fast"] = exact_vs_fast(settings, root, args.seeds, args.device, args.data_dir, args.budget)
    if "runs-per-gpu" not in skip:
        results["runs_per_gpu"] = runs_per_gpu(settings, root, args.device, args.data_dir, args.budget)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_round2.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "gpu_round2.md").write_text(table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
