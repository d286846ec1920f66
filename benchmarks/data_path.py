"""Benchmark: the training data path for each --data-placement, alone and under a training step.

The same images are loaded as `iat train` loads them (`TrainData.load`), once per placement:
- float:  the images as float32 [0,1] tensors on the device (what TrainData held before it kept bytes);
- device: uint8 on the device, a batch gathered and converted there;
- host:   uint8 in host memory (pinned on CUDA), each batch gathered one ahead in a background thread;
- mmap:   uint8 memory-mapped from a .npy file written into --data-dir/mmap, streamed as host is.

Two figures per placement: images/s of the data path alone (every batch of an epoch: gather, convert,
augment, on the device) and images/s of training with it (`Step` as `iat train` builds it, on those batches).
The placements take turns, one timed pass each per round, so a drift of the machine's speed hits all alike;
the medians (and the fastest passes) are printed with the step-time overhead of each against `device`, and
written as JSON (--json).

    python benchmarks/data_path.py                                  # fashion-mnist-32, 4096 images, batch 128
    python benchmarks/data_path.py --device cuda --train-size 50000 --batch-size 512 --arch preactresnet18
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from iat.config import TrainConfig, resolve_device
from iat.data import to_float
from iat.training import step as step_module
from iat.training.engine import build_update
from iat.training.step import TrainData

PLACEMENTS = ("float", "device", "host", "mmap")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load(cfg: TrainConfig, placement: str, device: torch.device) -> TrainData:
    if placement == "float":
        data = TrainData.load(dataclasses.replace(cfg, data_placement="device"), device)
        return dataclasses.replace(data, x=to_float(data.x))
    return TrainData.load(dataclasses.replace(cfg, data_placement=placement), device)


def data_pass(data: TrainData, batch_size: int, steps: int, device: torch.device) -> float:
    """Seconds for `steps` batches of the data path alone."""
    order = torch.randperm(len(data)).to(data.x.device)
    sync(device)
    started = time.perf_counter()
    for i, _batch in enumerate(data.batches(order, 0, batch_size)):
        if i + 1 == steps:
            break
    sync(device)
    return time.perf_counter() - started


def step_pass(data: TrainData, update: Callable, batch_size: int, steps: int, device: torch.device) -> float:
    """Seconds for `steps` training steps, each on the next batch of the data path."""
    order = torch.randperm(len(data)).to(data.x.device)
    sync(device)
    started = time.perf_counter()
    for i, (x, y, _) in enumerate(data.batches(order, 0, batch_size)):
        update(x, y)
        if i + 1 == steps:
            break
    sync(device)
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist-32")
    p.add_argument("--arch", default="cnn-small")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--method", default="iat-mixup")
    p.add_argument("--attack-steps", type=int, default=3)
    p.add_argument("--train-size", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--data-steps", type=int, default=32, help="batches per timed pass of the data path alone")
    p.add_argument("--train-steps", type=int, default=8, help="steps per timed pass of training")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--placements", default=",".join(PLACEMENTS))
    p.add_argument("--threads", type=int, default=1, help="torch's intra-op threads (1: steadier on a shared machine)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    placements = args.placements.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(method=args.method, dataset=args.dataset, arch=args.arch, width=args.width,
                          train_size=args.train_size, batch_size=args.batch_size, attack_steps=args.attack_steps,
                          eps=8 / 255, step_size=2 / 255, device=args.device, seed=0, data_dir=None).validate()
        step_module.DEFAULT_DATA_DIR = Path(tmp)  # the mmap cache (<data-dir>/mmap) in a folder removed at the end
        data = {pl: load(cfg, pl, device) for pl in placements}
        steps = {}
        for pl in placements:
            steps[pl] = build_update(cfg, device)
            data_pass(data[pl], args.batch_size, 2, device)  # warm-up: allocator, threads, first page faults
            step_pass(data[pl], steps[pl], args.batch_size, 1, device)
        times: dict[str, dict[str, list[float]]] = {pl: {"data": [], "train": []} for pl in placements}
        for _ in range(args.rounds):
            for pl in placements:
                times[pl]["data"].append(data_pass(data[pl], args.batch_size, args.data_steps, device))
                times[pl]["train"].append(step_pass(data[pl], steps[pl], args.batch_size, args.train_steps, device))
    # the median, and the fastest pass: on a machine shared with other jobs, the least disturbed one
    ref = times.get("device", times[placements[0]])["train"]
    base, base_min = statistics.median(ref) / args.train_steps, min(ref) / args.train_steps
    rows = []
    print(f"{'placement':10s} {'bytes/pixel':>11s} {'data img/s':>11s} {'train img/s':>11s} {'s/step':>8s} "
          f"{'vs device':>9s} {'fastest s/step':>14s} {'vs device':>9s}")
    for pl in placements:
        d = statistics.median(times[pl]["data"]) / args.data_steps
        t, t_min = statistics.median(times[pl]["train"]) / args.train_steps, min(times[pl]["train"]) / args.train_steps
        row = {"placement": pl, "bytes_per_pixel": data[pl].x.element_size(), "data_images_per_s": args.batch_size / d,
               "train_images_per_s": args.batch_size / t, "s_per_step": t, "step_overhead_vs_device": t / base - 1,
               "fastest_s_per_step": t_min, "fastest_overhead_vs_device": t_min / base_min - 1,
               "data_s": times[pl]["data"], "train_s": times[pl]["train"]}
        rows.append(row)
        print(f"{pl:10s} {row['bytes_per_pixel']:11d} {row['data_images_per_s']:11.0f} "
              f"{row['train_images_per_s']:11.1f} {t:8.3f} {100 * row['step_overhead_vs_device']:+8.1f}% "
              f"{t_min:14.3f} {100 * row['fastest_overhead_vs_device']:+8.1f}%")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "torch": torch.__version__,
                                         "threads": torch.get_num_threads(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
