"""Benchmark: images/s of one IAT-Mixup training step (Algorithm 1, PGD-7), iat's Step against two
plain implementations, in one process on the same model, data and machine.

- plain-backward: the locuslab `train_pgd.py` style: the attack's loss calls `loss.backward()`
                  (parameter gradients computed and thrown away at every attack step).
- plain-inputgrad: a plain loop whose attack takes input-only gradients (torch.autograd.grad).
- iat variants:   `Step` as `iat train` builds it: `default` (fp32, channels_last), `contiguous`
                  (--no-channels-last), `amp` (--amp: bf16 update passes, fp32 attack), `amp-attack`
                  (--amp --attack-precision amp: the attack in bf16 too), `compile` (--compile),
                  `compile-amp-attack`.
Each variant builds its own model, takes one warm-up step (compilation, allocator), then the variants take
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
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from iat.config import TrainConfig
from iat.data import load_data
from iat.train.state import RunState
from iat.train.step import Step, make_objective

VARIANTS = ("plain-backward", "plain-inputgrad", "contiguous", "default", "amp", "amp-attack", "compile",
            "compile-amp-attack")
IAT_OPTIONS = {"contiguous": {"channels_last": False}, "default": {},  # default: fp32, channels_last
               "amp": {"amp": True}, "amp-attack": {"amp": True, "attack_precision": "amp"},
               "compile": {"compile": True}, "compile-amp-attack": {"compile": True, "amp": True,
                                                                     "attack_precision": "amp"}}


def plain_step(model, optimizer, x, y, *, eps: float, alpha: float, steps: int, backward_attack: bool) -> None:
    """One IAT-Mixup update written out: mixed clean loss, PGD-7 from a uniform start, mixed adversarial loss."""
    def mixed(inp):
        lam = torch.distributions.Beta(torch.tensor(1.0), torch.tensor(1.0)).sample()
        perm = torch.randperm(len(inp))
        logits = model(lam * inp + (1 - lam) * inp[perm])
        return lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])

    model.train()
    loss_clean = mixed(x)
    model.eval()
    delta = torch.empty_like(x).uniform_(-eps, eps)
    delta = ((x + delta).clamp(0, 1) - x).detach()
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y, reduction="sum")
        if backward_attack:
            loss.backward()  # locuslab style: parameter gradients too
            grad = delta.grad
        else:
            (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
        delta = ((x + delta).clamp(0, 1) - x).detach()
    model.train()
    loss = (loss_clean + mixed(x + delta)) / 2
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def make_runner(variant: str, cfg: TrainConfig, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One training step of `variant` on its own fresh model and optimizer."""
    vcfg = TrainConfig(**{**cfg.__dict__, **IAT_OPTIONS.get(variant, {})})
    state = RunState.create(vcfg, device)
    if variant.startswith("plain"):
        def run(x, y):
            plain_step(state.model, state.optimizer, x, y, eps=cfg.eps, alpha=cfg.step_size,
                       steps=cfg.attack_steps, backward_attack=variant == "plain-backward")
        return run
    step = Step.for_run(vcfg, state, make_objective(vcfg, state.model), out=Path("unused"), device=device)
    return lambda x, y: step(state, x, y)


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
