"""`iat demo`: the paper's white-box table (Tables 1-4) at CPU scale on Fashion-MNIST.

Six methods, the same budget each (architecture, epochs, data, schedule), evaluated on the full
10,000 test images against FGSM, PGD-7 and PGD-20. The defaults below were chosen so that the whole
demo runs in about 20 minutes on a 2-core CPU; see README for the table they give.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from iat import runio
from iat.config import TrainConfig
from iat.evaluate import evaluate_run
from iat.methods import METHODS
from iat.report import ATTACK_COLUMNS, mean_std, whitebox_table
from iat.train import train
from iat.units import format_eps

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    dataset: str = "fashion-mnist"
    arch: str = "mlp6"  # the paper's own Fashion-MNIST network (Section 4.4)
    width: int | None = None  # None: the architecture's own (512 for mlp6)
    epochs: int = 20
    train_size: int | None = 10_000  # the first N training images
    batch_size: int = 64  # the paper's
    lr: float = 0.1
    eps: float = 0.1  # common on Fashion-MNIST (~25/255)
    step_size: float = 0.025  # eps / 4, as 2/255 is to 8/255
    attack_steps: int = 7
    test_size: int | None = None  # None: all 10,000 test images
    device: str = "auto"
    data_dir: str | None = None

    def train_config(self, method: str, seed: int) -> TrainConfig:
        return TrainConfig(method=method, dataset=self.dataset, arch=self.arch, width=self.width,
                           epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, eps=self.eps,
                           step_size=self.step_size, attack_steps=self.attack_steps, seed=seed,
                           device=self.device, data_dir=self.data_dir, train_size=self.train_size,
                           extra={"experiment": "demo"}).validate()


def run_demo(cfg: DemoConfig, out: str | Path, seeds: int = 1, methods: list[str] | None = None,
             progress: bool = True) -> dict:
    """Train and evaluate every method for every seed under `out`; write results.json and table.md."""
    out = Path(out)
    methods = methods or list(METHODS)
    for m in methods:  # validate everything before any directory is created
        cfg.train_config(m, 0)
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    attacks = list(ATTACK_COLUMNS)
    errors: dict[str, dict[str, list[float]]] = {m: {a: [] for a in attacks} for m in methods}
    for seed in range(seeds):
        for method in methods:
            run_dir = out / f"{method}-seed{seed}"
            log.info("demo: %s, seed %d", method, seed)
            train(cfg.train_config(method, seed), run_dir, resume=True, progress=progress)
            report = evaluate_run(run_dir, attacks, cfg.eps, cfg.step_size, limit=cfg.test_size,
                                  device=cfg.device, data_dir=cfg.data_dir, progress=progress)
            for a in attacks:
                errors[method][a].append(report["results"][a]["error"])
    seconds = time.perf_counter() - started
    summary = {m: {a: mean_std(v) for a, v in errs.items()} for m, errs in errors.items()}
    results = {"dataset": cfg.dataset, "seeds": list(range(seeds)), "methods": summary,
               "config": dataclasses.asdict(cfg), "seconds": round(seconds, 1),
               "torch_version": torch.__version__, "threads": torch.get_num_threads()}
    runio.write_json(out / "results.json", results)
    table = whitebox_table(summary, {m: METHODS[m].label for m in methods}, attacks)
    header = (f"# iat demo: {cfg.dataset}, {cfg.arch}, {cfg.epochs} epochs on "
              f"{cfg.train_size or 'all'} training images, eps {format_eps(cfg.eps)}, "
              f"PGD step {format_eps(cfg.step_size)}, {seeds} seed(s)\n\n"
              f"Error in % on the test split (mean ± std over seeds). Wall time {seconds / 60:.1f} min.\n\n")
    runio.atomic_write_bytes(out / "table.md", (header + table + "\n").encode())
    results["table"] = table
    return results
