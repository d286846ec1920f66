"""`iat eval --attacks pgd7,pgd20`: one PGD-20 run read at steps 7 and 20, vs two separate runs.

    python benchmarks/eval_shared_pgd.py RUN_DIR [--limit N]     # figures in benchmarks/README.md
"""

from __future__ import annotations

import argparse
import time

import torch

from iat.attacks import AttackBudget
from iat.data import load_data
from iat.evaluate import evaluate
from iat.rundir.read import load_run_config, load_run_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_run_config(args.run_dir)
    model = load_run_model(args.run_dir)
    x, y = load_data(cfg.dataset, "test", cfg.data_dir, limit=args.limit)
    t = time.perf_counter()
    budget = AttackBudget(cfg.eps, cfg.step_size)
    separate = {a: evaluate(model, x, y, [a], budget=budget)[a] for a in ("pgd7", "pgd20")}
    t_separate = time.perf_counter() - t
    t = time.perf_counter()
    shared = evaluate(model, x, y, ["pgd7", "pgd20"], budget=budget)
    t_shared = time.perf_counter() - t
    print(f"{args.run_dir}: {len(x)} {cfg.dataset} test images, {torch.get_num_threads()} threads")
    print(f"separate runs: {t_separate:6.1f} s  {separate}")
    print(f"one PGD-20 run: {t_shared:6.1f} s  {shared}  (speed-up {t_separate / t_shared:.2f}x)")
    assert shared == separate, "the shared run must give the same numbers"


if __name__ == "__main__":
    main()
