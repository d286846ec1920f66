"""Benchmark: seconds per training step of the baselines (TRADES, MART, AWP, EMA) against PGD training, in one
process on the same model, data and machine.

Each variant is `iat train`'s own Step (fp32, the library's defaults) for one method and modifier:
    pgd          PGD training (the paper's Madry et al. row): PGD-7, CE on x'
    trades       TRADES: PGD-7 on the KL term, CE(x) + beta KL(f(x) || f(x'))
    mart         MART: PGD-7 on CE, boosted CE on x' + beta weighted KL
    iat-mixup    IAT with Mixup (the paper's method)
    iat-trades   IAT-TRADES (docs/baselines.md)
    pgd+awp      PGD training with --awp 0.01 (one weight-space ascent step per update)
    trades+awp   TRADES with --awp 0.005
    pgd+ema      PGD training with --ema 0.999 (an average updated after every step)
Each variant builds its own model, takes one warm-up step, then the variants take turns: --steps rounds, each a
timed step of every variant on the same batch (as benchmarks/train_step.py does), so that a change in the
machine's load during the run hits every variant alike. Each step's wall time and CPU time are recorded: on a
shared machine the wall time carries other processes' load, while the CPU time of one thread (--threads 1, the
default: as each of the demo's runs trains) counts this process's work only. The medians and their ratio to
`pgd` are printed and written as JSON (--json), with every timed step.

    python benchmarks/baselines_cost.py                                  # mlp6 (the demo's network), batch 64
    python benchmarks/baselines_cost.py --arch preactresnet18 --width 16 --steps 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from train_step import timing_batches  # benchmarks/ is on the path when this file runs

from iat.config import TrainConfig
from iat.errors import UsageError
from iat.training.engine import build_update

# variant: (method, options over the common config)
VARIANTS = {"pgd": ("pgd", {}), "trades": ("trades", {}), "mart": ("mart", {}), "iat-mixup": ("iat-mixup", {}),
            "iat-trades": ("iat-trades", {}), "pgd+awp": ("pgd", {"awp": 0.01}),
            "trades+awp": ("trades", {"awp": 0.005}), "pgd+ema": ("pgd", {"ema": 0.999})}


def make_runner(variant: str, cfg: TrainConfig, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One training step of `variant` on its own fresh model and optimizer, seeded alike."""
    method, options = VARIANTS[variant]
    vcfg = TrainConfig(**{**cfg.__dict__, "method": method, **options}).validate()
    torch.manual_seed(0)
    return build_update(vcfg, device)


def measure(variants: list[str], cfg: TrainConfig, batches: list, device: torch.device, rounds: int) -> dict:
    """Each variant's step times, wall and CPU (seconds), in round order, after one warm-up step each."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    runners = {}
    for variant in variants:
        runners[variant] = make_runner(variant, cfg, device)
        started = time.perf_counter()
        runners[variant](*batches[0])
        sync()
        print(f"{variant:12s} warm-up {time.perf_counter() - started:7.2f} s", flush=True)
    times: dict[str, dict[str, list[float]]] = {v: {"wall": [], "cpu": []} for v in variants}
    for r in range(rounds):
        x, y = batches[1 + r % (len(batches) - 1)]
        for variant in variants:
            started, cpu = time.perf_counter(), time.process_time()
            runners[variant](x, y)
            sync()
            times[variant]["wall"].append(time.perf_counter() - started)
            times[variant]["cpu"].append(time.process_time() - cpu)
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{v} {times[v]['cpu'][-1]:.3f}" for v in variants)
              + f" s CPU (load {os.getloadavg()[0]:.1f})", flush=True)
    return times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="mlp6", help="the network (default: mlp6, the demo's)")
    p.add_argument("--width", type=int, default=None, help="the architecture's width (default: its own)")
    p.add_argument("--batch-size", type=int, default=64, help="images per step (default: 64, the paper's)")
    p.add_argument("--steps", type=int, default=10, help="rounds: timed steps per variant after one warm-up")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from: " + ", ".join(VARIANTS))
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1, as each demo run trains)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or min(args.steps, args.batch_size, args.threads) < 1:
        what = f"unknown variant {unknown[0]!r}" if unknown else "--steps, --batch-size and --threads must be >= 1"
        print(f"baselines_cost.py: {what}; variants: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    try:
        cfg = TrainConfig(method="pgd", dataset="fashion-mnist", arch=args.arch, width=args.width, eps=0.1,
                          step_size=0.025, attack_steps=7, batch_size=args.batch_size, device=args.device).validate()
    except UsageError as e:
        print(f"baselines_cost.py: {e}", file=sys.stderr)
        return 2
    batches = timing_batches(args.data_dir, args.batch_size, args.steps, device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}, "
          f"{args.arch} (width {args.width or 'its own'}), PGD-7, batch {args.batch_size}, {args.steps} rounds, "
          f"device {device}")
    times = measure(variants, cfg, batches, device, args.steps)
    results = {v: {"s_per_step": statistics.median(t["wall"]), "cpu_s_per_step": statistics.median(t["cpu"]),
                   "s_per_step_all": t["wall"], "cpu_s_per_step_all": t["cpu"]} for v, t in times.items()}
    base = results.get("pgd")
    print(f"\nmedian of {args.steps} rounds:")
    for variant, row in results.items():
        ratio = (f"{row['cpu_s_per_step'] / base['cpu_s_per_step']:5.2f}x pgd (CPU), "
                 f"{row['s_per_step'] / base['s_per_step']:5.2f}x (wall)") if base else ""
        print(f"{variant:12s} {1000 * row['cpu_s_per_step']:8.1f} ms CPU/step {1000 * row['s_per_step']:8.1f} ms "
              f"wall/step  {ratio}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
