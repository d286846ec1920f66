"""Benchmark: images/s of one IAT-Mixup training step (Algorithm 1, PGD-7), iat's Step against two
plain implementations, in one process on the same model, data and machine.

- plain-backward: the locuslab `train_pgd.py` style: the attack's loss calls `loss.backward()`
                  (parameter gradients computed and thrown away at every attack step).
- plain-inputgrad: a plain loop whose attack takes input-only gradients (torch.autograd.grad).
- iat variants:   `Step` as `iat train` builds it: fp32 (the default), --channels-last, --amp (bf16),
                  --amp --channels-last, --compile.
Each variant: one warm-up step (compilation, allocator), then --steps timed steps of --batch-size
images; images/s and the ratio to plain-backward are printed and written as JSON (--json).

    python benchmarks/train_step.py                          # preactresnet18, 28x28 Fashion-MNIST, batch 64
    python benchmarks/train_step.py --arch mlp6 --steps 20 --variants fp32,amp
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from iat.config import TrainConfig
from iat.data import load_data
from iat.train.state import RunState
from iat.train.step import Step, make_objective

VARIANTS = ("plain-backward", "plain-inputgrad", "fp32", "channels-last", "amp", "amp-channels-last", "compile")
IAT_OPTIONS = {"fp32": {}, "channels-last": {"channels_last": True}, "amp": {"amp": True},
               "amp-channels-last": {"amp": True, "channels_last": True}, "compile": {"compile": True}}


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


def measure(variant: str, cfg: TrainConfig, batches: list, device: torch.device) -> float:
    """Seconds per step of `variant`, over all batches but the first (the warm-up)."""
    vcfg = TrainConfig(**{**cfg.__dict__, **IAT_OPTIONS.get(variant, {})})
    state = RunState.create(vcfg, device)
    if variant.startswith("plain"):
        def run(x, y):
            plain_step(state.model, state.optimizer, x, y, eps=cfg.eps, alpha=cfg.step_size,
                       steps=cfg.attack_steps, backward_attack=variant == "plain-backward")
    else:
        torch._dynamo.reset()
        step = Step.for_run(vcfg, state, make_objective(vcfg, state.model)[0], out=Path("unused"), device=device)
        def run(x, y):
            step(state, x, y)
    run(*batches[0])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    started = time.perf_counter()
    for x, y in batches[1:]:
        run(x, y)
    sync()
    return (time.perf_counter() - started) / (len(batches) - 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="preactresnet18")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    cfg = TrainConfig(method="iat-mixup", dataset="fashion-mnist", arch=args.arch, width=args.width, eps=0.1,
                      step_size=0.025, attack_steps=7, batch_size=args.batch_size, device=args.device)
    n = args.batch_size * (args.steps + 1)
    if Path(args.data_dir).is_dir():
        x, y = load_data("fashion-mnist", "train", args.data_dir, limit=n)
    else:  # speed does not depend on the pixels: random images where the data set is absent
        print(f"{args.data_dir} is absent: random 28x28 images")
        x, y = torch.rand(n, 1, 28, 28), torch.randint(10, (n,))
    batches = [(x[i:i + args.batch_size].to(device), y[i:i + args.batch_size].to(device))
               for i in range(0, n, args.batch_size)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}, "
          f"{args.arch} iat-mixup PGD-7, batch {args.batch_size}, {args.steps} timed steps, device {device}")
    results = {}
    for variant in args.variants.split(","):
        seconds = measure(variant, cfg, batches, device)
        results[variant] = {"s_per_step": seconds, "images_per_s": args.batch_size / seconds}
        base = results.get("plain-backward", {}).get("s_per_step")
        ratio = f"{base / seconds:5.2f}x plain-backward" if base else ""
        print(f"{variant:18s} {seconds:8.2f} s/step {args.batch_size / seconds:8.1f} images/s  {ratio}  "
              f"(load {os.getloadavg()[0]:.1f})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
