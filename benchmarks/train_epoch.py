"""Benchmark: one whole epoch of `iat train` against a plain PyTorch epoch, as the performance issue measures
it: IAT-Mixup with PGD-7, PreActResNet18, 256 Fashion-MNIST training images (28x28), batch 64, on the CPU.

- plain-backward: a plain script: build the model and SGD, shuffle, four updates in the locuslab
                  `train_pgd.py` style (the attack calls `loss.backward()`; see train_step.py), save the weights.
- iat:            `iat.training.train(cfg, out)` for one epoch: the real command's work, with its config.json,
                  metrics, checkpoint and safetensors writes; `--iat-options` adds `iat train` options
                  (e.g. amp=1,attack_precision=amp).
The two alternate for --rounds rounds, so a drift of the machine's speed hits both alike. By default each
epoch runs in a fresh Python process, as a user runs a script or `iat train` (the time is measured inside
it, after imports); --same-process runs both in this process instead, so the plain loop also gets the
allocator setting iat makes (iat.cpu_memory): the conservative comparison. The median seconds per epoch
and the ratio are printed (and written as JSON with --json).

    python benchmarks/train_epoch.py --rounds 3
    python benchmarks/train_epoch.py --rounds 3 --same-process
    python benchmarks/train_epoch.py --rounds 3 --iat-options amp=1,attack_precision=amp
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

import torch
from train_step import iat_step

from iat.config import TrainConfig, build_model
from iat.data import load_data
from iat.training import train


def plain_epoch(cfg: TrainConfig, out: Path) -> None:
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    x, y = load_data(cfg.dataset, "train", cfg.data_dir, limit=cfg.train_size)
    order = torch.randperm(len(x))
    for i in range(0, len(x), cfg.batch_size):
        idx = order[i:i + cfg.batch_size]
        iat_step(model, optimizer, x[idx], y[idx], eps=cfg.eps, step_size=cfg.step_size, steps=cfg.attack_steps,
                 attack_param_grads=True)
    torch.save(model.state_dict(), out / "model.pt")


def iat_epoch(cfg: TrainConfig, out: Path) -> None:
    train(cfg, out / "run", progress=False)


EPOCHS = {"plain-backward": plain_epoch, "iat": iat_epoch}


def timed_epoch(name: str, cfg: TrainConfig) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        EPOCHS[name](cfg, Path(tmp))
        return time.perf_counter() - started


def timed_epoch_in_a_new_process(name: str, cfg: TrainConfig) -> float:
    done = subprocess.run([sys.executable, __file__, "--one", name, "--config", json.dumps(cfg.__dict__)],
                          capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def parse_options(text: str) -> dict:
    options = {}
    for item in filter(None, text.split(",")):
        key, value = item.split("=", 1)
        options[key] = {"1": True, "0": False}.get(value, value)
    return options


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--train-size", type=int, default=256)
    p.add_argument("--iat-options", default="", help="extra TrainConfig fields for the iat epoch, k=v,k=v")
    p.add_argument("--same-process", action="store_true", help="both in this process (see above)")
    p.add_argument("--json", default=None)
    p.add_argument("--one", choices=list(EPOCHS), help=argparse.SUPPRESS)  # a child process: one epoch
    p.add_argument("--config", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(timed_epoch(args.one, TrainConfig(**json.loads(args.config))))
        return
    cfg = TrainConfig(method="iat-mixup", dataset="fashion-mnist", arch="preactresnet18", epochs=1,
                      train_size=args.train_size, batch_size=64, eps=0.1, step_size=0.025, attack_steps=7,
                      device="cpu", seed=0)
    iat_cfg = TrainConfig(**{**cfg.__dict__, **parse_options(args.iat_options)}).validate()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}; "
          f"one epoch of iat-mixup PGD-7, preactresnet18, {args.train_size} images, batch 64; "
          f"iat options: {args.iat_options or 'defaults'}; "
          f"{'one process' if args.same_process else 'a fresh process per epoch'}", flush=True)
    times: dict[str, list[float]] = {"plain-backward": [], "iat": []}
    run = timed_epoch if args.same_process else timed_epoch_in_a_new_process
    for r in range(args.rounds):
        for name, c in (("plain-backward", cfg), ("iat", iat_cfg)):
            times[name].append(run(name, c))
        print(f"round {r + 1}/{args.rounds}: plain-backward {times['plain-backward'][-1]:.1f} s, "
              f"iat {times['iat'][-1]:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    plain, iat = statistics.median(times["plain-backward"]), statistics.median(times["iat"])
    print(f"median: plain-backward {plain:.1f} s/epoch, iat {iat:.1f} s/epoch: iat {plain / iat:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "seconds": times, "ratio": plain / iat}, indent=1))


if __name__ == "__main__":
    main()
