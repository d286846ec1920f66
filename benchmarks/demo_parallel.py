"""Is it faster to train the demo's runs one at a time on all cores, or in parallel, one core each?

Trains the same short PGD-training job (the demo's model and attack, on a slice of Fashion-MNIST)
`--runs` times, first sequentially with torch using every core, then `--runs` at once in separate
processes with one thread each, and prints the wall times and their ratio.

    python benchmarks/demo_parallel.py            # figures are quoted in benchmarks/README.md
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import torch


def job(out: str, threads: int, train_size: int, arch: str) -> float:
    torch.set_num_threads(threads)
    from iat.config import TrainConfig
    from iat.training import train

    cfg = TrainConfig(method="pgd", dataset="fashion-mnist", arch=arch, epochs=1, train_size=train_size,
                      eps=0.1, step_size=0.025, device="cpu")
    t = time.perf_counter()
    train(cfg, out, progress=False)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--train-size", type=int, default=3000)
    p.add_argument("--arch", default="mlp6")
    args = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    root = tempfile.mkdtemp()
    try:
        job(f"{root}/warmup", cores, 256, args.arch)
        t = time.perf_counter()
        for i in range(args.runs):
            job(f"{root}/seq{i}", cores, args.train_size, args.arch)
        sequential = time.perf_counter() - t
        t = time.perf_counter()
        with ProcessPoolExecutor(args.runs, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(job, [f"{root}/par{i}" for i in range(args.runs)], [1] * args.runs,
                          [args.train_size] * args.runs, [args.arch] * args.runs))
        parallel = time.perf_counter() - t
    finally:
        shutil.rmtree(root)
    print(f"{args.runs} x PGD-7 training, {args.arch}, 1 epoch of {args.train_size} Fashion-MNIST images, "
          f"{cores} cores, torch {torch.__version__}")
    print(f"sequential, {cores} threads each : {sequential:7.1f} s")
    print(f"parallel, 1 thread each       : {parallel:7.1f} s   (speed-up {sequential / parallel:.2f}x)")


if __name__ == "__main__":
    main()
