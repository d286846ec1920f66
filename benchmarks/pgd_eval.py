"""Benchmark: PGD-20 and PGD-1000 evaluation of the demo's PGD-trained model on Fashion-MNIST's test set.

Compares, in one process on the same model and images:
- plain:   the textbook loop: PGD (iat.attacks.PGD) on every test image for every step, then one
           prediction on the final iterate; parameters keep requires_grad=True.
- iat:     `iat eval`'s engine (iat.evaluate.evaluate): only the images classified correctly clean
           are attacked, each leaves the batch the moment it is misclassified, parameters are frozen.
and prints seconds, error (%), and the number of image forward passes (one per image per step, plus
predictions), with the ratios plain / iat.

The model is the demo's (`iat train --method pgd --dataset fashion-mnist --arch mlp6 --epochs 20
--train-size 10000 --eps 0.1 --step-size 0.025`); pass --run DIR to use one, else it is trained into
--work DIR first (--epochs to shorten that).

    python benchmarks/pgd_eval.py --run runs/fmnist-pgd --steps 20             # all 10,000 images
    python benchmarks/pgd_eval.py --run runs/fmnist-pgd --steps 1000 --limit 1000
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import torch

import iat
from iat.attacks import PGD, AttackBudget
from iat.attacks.worstcase import error_pct, predict
from iat.data import load_data
from iat.demo import demo_experiment
from iat.evaluate import evaluate
from iat.rundir.read import load_run_model
from iat.units import parse_int_list


class RowCounter:
    """Counts images through model.forward (a forward pre-hook); reset between measurements."""

    def __init__(self, model: torch.nn.Module):
        self.rows = 0
        self.handle = model.register_forward_pre_hook(self.hook)

    def hook(self, module, args):
        self.rows += len(args[0])


def plain_pgd_error(model, x, y, eps, step_size, steps, batch_size, seed) -> float:
    torch.manual_seed(seed)
    correct = torch.zeros(len(x), dtype=torch.bool)
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        x_adv = PGD(model, eps=eps, step_size=step_size, steps=steps)(xb, yb)
        correct[i : i + batch_size] = predict(model, x_adv, batch_size) == yb
    return error_pct(correct)


def ensure_model(args) -> Path:
    if args.run is not None:
        return Path(args.run)
    run = Path(args.work) / f"fashion-mnist-pgd-mlp6-{args.epochs}ep"
    if not (run / "model.safetensors").is_file():
        from iat.training import train

        cfg = demo_experiment(epochs=args.epochs).settings.train_config("pgd", seed=0, device="cpu")
        logging.info("training the demo's PGD model into %s (%d epochs)", run, args.epochs)
        train(cfg, run, resume=True, progress=True)
    return run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default=None, help="a trained run directory (default: train the demo's PGD model)")
    p.add_argument("--work", default="benchmarks/.runs", help="where to train the model when --run is not given")
    p.add_argument("--epochs", type=int, default=20, help="epochs when training the model (demo: 20)")
    p.add_argument("--steps", default="20,1000", help="comma-separated PGD step counts")
    p.add_argument("--limit", type=int, default=None, help="the first N test images (default: all 10,000)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--skip-plain", action="store_true", help="time only iat's engine")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    steps_list = parse_int_list(args.steps, "--steps", 1)

    run = ensure_model(args)
    model = load_run_model(run, "cpu")
    cfg = json.loads((run / "config.json").read_text())
    eps, step_size = cfg["eps"], cfg["step_size"]
    x, y = load_data("fashion-mnist", "test", limit=args.limit)
    counter = RowCounter(model)
    clean_error = error_pct(predict(model, x, args.batch_size) == y)
    header = {"run": str(run), "n_examples": len(x), "eps": eps, "step_size": step_size,
              "clean_error": clean_error, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "iat": iat.__version__, "cpu": platform.processor() or platform.machine(),
              "python": sys.version.split()[0]}
    print(f"# {len(x)} Fashion-MNIST test images, eps {eps}, step {step_size}, clean error {clean_error:.2f}%, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| attack | implementation | seconds | error % | image forward passes |")
    print("|--------|----------------|---------|---------|----------------------|")
    rows = []
    for steps in steps_list:
        measured = {}
        variants = [("iat", lambda s=steps: evaluate(model, x, y, [f"pgd{s}"],
                                                       budget=AttackBudget(eps, step_size),
                                                       batch_size=args.batch_size, seed=0)[f"pgd{s}"]["error"])]
        if not args.skip_plain:
            variants.append(("plain", lambda s=steps: plain_pgd_error(model, x, y, eps, step_size, s,
                                                                      args.batch_size, 0)))
        for name, fn in variants:
            counter.rows = 0
            started = time.perf_counter()
            error = fn()
            seconds = time.perf_counter() - started
            measured[name] = {"seconds": seconds, "error": error, "forward_rows": counter.rows}
            print(f"| PGD-{steps} | {name} | {seconds:.1f} | {error:.2f} | {counter.rows:,} |", flush=True)
        row = {"steps": steps, **measured}
        if "plain" in measured:
            row["speedup"] = measured["plain"]["seconds"] / measured["iat"]["seconds"]
            row["work_ratio"] = measured["plain"]["forward_rows"] / max(measured["iat"]["forward_rows"], 1)
            print(f"| PGD-{steps} | plain / iat | x{row['speedup']:.2f} | | x{row['work_ratio']:.2f} |", flush=True)
        rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps({**header, "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
