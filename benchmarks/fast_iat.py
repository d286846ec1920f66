"""Fast IAT: single-step inner attacks (fgsm-rs, n-fgsm) against the paper's PGD-7, in cost and error.

Trains `pgd` and `iat-mixup` with each `--attack` on Fashion-MNIST (mlp6, eps 0.1, step 0.025: the
demo's setting, one seed, the same budget for every row) with `iat train`, evaluates each with
`iat eval --attacks clean,fgsm,pgd20` on the 10,000 test images, and prints a markdown table:
seconds per epoch (metrics.jsonl, training steps only), the ratio to PGD-7 IAT, the errors, and the
guard's last PGD-10 accuracy. Each run is `nice`d with one torch thread, `--jobs` at a time. On a
shared machine the wall time per epoch grows with the load; the training process's CPU time (one
thread; it includes loading the data and the guard) does not, so the ratio is taken from it.

    python benchmarks/fast_iat.py --out bench-fast --train-size 20000 --epochs 5 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

METHODS = ("iat-mixup", "pgd")
ATTACKS = ("pgd", "fgsm-rs", "n-fgsm")
SETTING = ["--dataset", "fashion-mnist", "--arch", "mlp6", "--eps", "0.1", "--step-size", "0.025", "--device", "cpu"]


def iat(*args: str) -> list[str]:
    return ["nice", sys.executable, "-m", "iat", *args]


def one_run(out: Path, method: str, attack: str, a: argparse.Namespace) -> Path:
    """Train (unless finished) and evaluate one (method, attack) run; return its directory."""
    run = out / f"{method}-{attack}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    data = ["--data-dir", a.data_dir] if a.data_dir else []
    if not (run / "model.safetensors").is_file():
        size = ["--train-size", str(a.train_size)] if a.train_size else []
        cmd = iat("train", "--method", method, "--attack", attack, *SETTING, "--epochs", str(a.epochs),
                  "--seed", str(a.seed), *size, *data, "--out", str(run), *(["--resume"] if run.exists() else []))
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU time: a cost that load does not inflate
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise subprocess.CalledProcessError(proc.returncode, cmd)
        (run / "cpu_seconds.json").write_text(json.dumps({"train": usage.ru_utime + usage.ru_stime}))
    if not (run / "eval.json").is_file():
        subprocess.run(iat("eval", str(run), "--attacks", "clean,fgsm,pgd20", "-q", *data), env=env, check=True,
                       stdout=subprocess.DEVNULL)
    return run


def row(run: Path, method: str, attack: str) -> dict:
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    errors = json.loads((run / "eval.json").read_text())["results"]
    cpu = json.loads((run / "cpu_seconds.json").read_text())["train"] if (run / "cpu_seconds.json").is_file() else None
    return {"method": method, "attack": attack, "s_per_epoch": sum(m["seconds"] for m in metrics) / len(metrics),
            "cpu_per_epoch": None if cpu is None else cpu / len(metrics),
            "guard": metrics[-1].get("guard_pgd_acc"), **{k: v["error"] for k, v in errors.items()}}


def table(rows: list[dict]) -> str:
    base = next(r for r in rows if (r["method"], r["attack"]) == ("iat-mixup", "pgd"))
    lines = ["| method | --attack | s / epoch (wall) | CPU s / epoch | CPU vs PGD-7 IAT | clean err % | FGSM err % | "
             "PGD-20 err % | guard PGD-10 acc |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        guard = "-" if r["guard"] is None else f"{100 * r['guard']:.1f}%"
        cpu, ratio = "-", "-"
        if r["cpu_per_epoch"] is not None and base["cpu_per_epoch"] is not None:
            cpu, ratio = f"{r['cpu_per_epoch']:.1f}", f"{r['cpu_per_epoch'] / base['cpu_per_epoch']:.2f}x"
        lines.append(f"| {r['method']} | {r['attack']} | {r['s_per_epoch']:.1f} | {cpu} | {ratio} | "
                     f"{r['clean']:.2f} | {r['fgsm']:.2f} | {r['pgd20']:.2f} | {guard} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench-fast-iat", help="where the run directories go (reused if present)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--train-size", type=int, default=None, help="first N training images (default: all 60,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (each one thread)")
    p.add_argument("--data-dir", default=None)
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(m, k) for k in ATTACKS for m in METHODS]  # the two slow PGD-7 runs first
    with ThreadPoolExecutor(a.jobs) as pool:
        runs = list(pool.map(lambda job: one_run(out, *job, a), jobs))
    text = table([row(run, *job) for run, job in zip(runs, jobs)])
    (out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
