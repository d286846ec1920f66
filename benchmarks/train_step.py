"""Benchmark: images/s of one IAT-Mixup training step (Algorithm 1, PGD-7), iat's step against two
plain implementations, in one process on the same model, data and machine.

- plain-backward: examples/iat_in_one_page.py's `iat_step` with `attack_param_grads=True`: the attack also
                  computes the parameters' gradients and drops them, the cost of locuslab's `train_pgd.py`
                  (its attack calls `loss.backward()`).
- plain-inputgrad: the same page's `iat_step` as it stands: input-only attack gradients (torch.autograd.grad).
- iat variants:   `iat.training.engine.build_update`, `iat train`'s own step: `default` (fp32, channels_last),
                  `contiguous` (--no-channels-last), `amp` (--amp: bf16 update passes, fp32 attack),
                  `amp-attack` (--amp --attack-precision amp: the attack in bf16 too), `compile` (--compile),
                  `compile-amp-attack`.
Each variant builds its own model under PyTorch's stock numeric flags (STOCK_FLAGS) and keeps the flags it set
for itself (iat's TF32 and cuDNN options): every one of its steps runs under them, and the caller's flags are
back after it (`own_flags`). Each takes one warm-up step (compilation, allocator), then the variants take
turns: --steps rounds, each a timed step of every variant on the same batch, so that a change in the
machine's load or clock during the run hits every variant alike. The median step time, images/s and the
ratio to plain-backward are printed and written as JSON (--json), with every timed step.

    python benchmarks/train_step.py                          # preactresnet18, 28x28 Fashion-MNIST, batch 64
    python benchmarks/train_step.py --arch mlp6 --steps 20 --variants plain-backward,default,amp
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from iat.config import TrainConfig, build_model
from iat.data import load_data
from iat.fp32 import kept_flags
from iat.training.engine import build_update

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from iat_in_one_page import iat_step  # noqa: E402  (the plain loop: Algorithm 1 on one page)

VARIANTS = ("plain-backward", "plain-inputgrad", "contiguous", "default", "amp", "amp-attack", "compile",
            "compile-amp-attack")
IAT_OPTIONS = {"contiguous": {"channels_last": False}, "default": {},  # default: fp32, channels_last
               "amp": {"amp": True}, "amp-attack": {"amp": True, "attack_precision": "amp"},
               "compile": {"compile": True}, "compile-amp-attack": {"compile": True, "amp": True,
                                                                     "attack_precision": "amp"}}

# torch's process-wide numeric flags, as PyTorch sets them in a fresh process: cuDNN convolutions may use TF32,
# CUDA matmuls may not, no cuDNN autotuning. A plain loop that sets nothing runs with these.
STOCK_FLAGS = {"matmul_tf32": False, "cudnn_tf32": True, "cudnn_benchmark": False}
# What `iat train --speed fast` sets on CUDA (--tf32 --cudnn-benchmark): the plain loop's fairest rival flags.
FAST_FLAGS = {"matmul_tf32": True, "cudnn_tf32": True, "cudnn_benchmark": True}


def torch_flags() -> dict:
    """The flags of STOCK_FLAGS as they are now."""
    return {"matmul_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_tf32": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark}


def matmul_precision() -> str | None:
    """torch.get_float32_matmul_precision(), or None where torch refuses to tell (after a mix of its legacy
    and new TF32 setters, torch 2.9+)."""
    try:
        return torch.get_float32_matmul_precision()
    except RuntimeError:
        return None


@contextmanager
def own_flags(flags: dict = STOCK_FLAGS) -> Iterator[None]:
    """Inside: torch's numeric flags as `flags` says; on exit: the caller's, float32_matmul_precision included."""
    precision = matmul_precision()
    try:
        with kept_flags():
            torch.backends.cuda.matmul.allow_tf32 = flags["matmul_tf32"]
            torch.backends.cudnn.allow_tf32 = flags["cudnn_tf32"]
            torch.backends.cudnn.benchmark = flags["cudnn_benchmark"]
            yield
    finally:
        if precision is not None and matmul_precision() != precision:
            torch.set_float32_matmul_precision(precision)  # a variant that set it: kept_flags does not keep it


def plain_update(cfg: TrainConfig, device: torch.device, *, attack_param_grads: bool
                 ) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """`update(x, y)`: the one-page `iat_step` on a fresh model of `cfg` and its SGD, as a plain script builds them."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    def update(x: torch.Tensor, y: torch.Tensor) -> None:
        iat_step(model, optimizer, x, y, eps=cfg.eps, step_size=cfg.step_size, steps=cfg.attack_steps,
                 alpha=cfg.mixup_alpha, attack_param_grads=attack_param_grads)

    return update


def make_runner(variant: str, cfg: TrainConfig, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One training step of `variant` on its own fresh model and optimizer, under its own flags: PyTorch's stock
    ones as changed by the variant's construction (iat's --tf32, --cudnn-benchmark), set again at every step."""
    vcfg = TrainConfig(**{**cfg.__dict__, **IAT_OPTIONS.get(variant, {})})
    with own_flags(STOCK_FLAGS):
        if variant.startswith("plain"):
            update = plain_update(vcfg, device, attack_param_grads=variant == "plain-backward")
        else:
            update = build_update(vcfg, device)
        flags = torch_flags()

    def run(x: torch.Tensor, y: torch.Tensor) -> None:
        with own_flags(flags):
            update(x, y)

    return run


def measure(variants: list[str], cfg: TrainConfig, batches: list, device: torch.device, rounds: int) -> dict:
    """Seconds per step of each variant: one warm-up step each, then `rounds` rounds in which every variant
    takes one timed step in turn, so a change of the machine's speed during the run hits all variants alike.
    Returns each variant's step times (seconds), in round order."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch._dynamo.config.recompile_limit = 64  # several compiled models live side by side here
    runners = {}
    for variant in variants:
        runners[variant] = make_runner(variant, cfg, device)
        started = time.perf_counter()
        runners[variant](*batches[0])  # warm-up: compilation, allocator
        sync()
        print(f"{variant:26s} warm-up {time.perf_counter() - started:7.1f} s", flush=True)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(rounds):
        x, y = batches[1 + r % (len(batches) - 1)]
        for variant in variants:
            started = time.perf_counter()
            runners[variant](x, y)
            sync()
            times[variant].append(time.perf_counter() - started)
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{v} {times[v][-1]:.2f}" for v in variants)
              + f" (load {os.getloadavg()[0]:.1f})", flush=True)
    return times


def timing_batches(data_dir: str, batch_size: int, steps: int, device: torch.device) -> list[tuple[torch.Tensor, ...]]:
    """A few Fashion-MNIST batches on `device` for timing (random 28x28 images where the data set is absent: speed
    does not depend on the pixels); shared with baselines_cost.py."""
    n = batch_size * (min(steps, 4) + 1)
    if Path(data_dir).is_dir():
        x, y = load_data("fashion-mnist", "train", data_dir, limit=n)
    else:
        print(f"{data_dir} is absent: random 28x28 images")
        x, y = torch.rand(n, 1, 28, 28), torch.randint(10, (n,))
    return [(x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)) for i in range(0, n, batch_size)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="preactresnet18")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="rounds: timed steps per variant (after one warm-up)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    cfg = TrainConfig(method="iat-mixup", dataset="fashion-mnist", arch=args.arch, width=args.width, eps=0.1,
                      step_size=0.025, attack_steps=7, batch_size=args.batch_size, device=args.device)
    batches = timing_batches(args.data_dir, args.batch_size, args.steps, device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}, "
          f"{args.arch} iat-mixup PGD-7, batch {args.batch_size}, {args.steps} timed steps, device {device}")
    variants = args.variants.split(",")
    times = measure(variants, cfg, batches, device, args.steps)
    results = {v: {"s_per_step": statistics.median(t), "images_per_s": args.batch_size / statistics.median(t),
                   "s_per_step_all": t} for v, t in times.items()}
    base = results.get("plain-backward", {}).get("s_per_step")
    print(f"\nmedian of {args.steps} rounds:")
    for variant, row in results.items():
        ratio = f"{base / row['s_per_step']:5.2f}x plain-backward" if base else ""
        print(f"{variant:26s} {row['s_per_step']:8.2f} s/step {row['images_per_s']:8.1f} images/s  {ratio}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
