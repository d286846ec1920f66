"""The random-label probe of Section 3: how well do frozen representations fit random labels?

The paper takes a trained network's representation, fits fixed random binary labels on 10,000
examples with a small 2-layer MLP for 200 epochs (the same hyper-parameters for every network),
and reads the fitting accuracy as the opposite of compression: 92.08% (ERM), 97.00% (PGD),
64.17% (Manifold Mixup), 71.00% (IAT with Manifold Mixup).

Here the representation is the penultimate layer (`MixableNet.features`) on the first N training
images, in eval mode. The labels are Bernoulli(1/2) draws from a generator seeded with `seed`, so
every run probed with the same settings gets the same labels and the same MLP initialisation. The
features are centered per dimension and divided by one global scale (their root mean square), so
that runs whose features differ only in overall scale are probed alike while the shape of the
representation is kept. The MLP is Linear(D, hidden) -> ReLU -> Linear(hidden, 2), trained with Adam
on the cross-entropy; the accuracy reported is on the same N examples after the last epoch.

    result = probe_runs(["runs/erm", "runs/pgd"], ProbeConfig(n=10_000, epochs=200))
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from iat.attacks import frozen
from iat.config import resolve_device
from iat.data import load_data
from iat.errors import UsageError
from iat.report import format_table
from iat.rundir.read import check_finished, load_run_config, load_run_model

log = logging.getLogger(__name__)


@dataclass
class ProbeConfig:
    n: int = 10_000  # randomly labelled training examples (paper: 10,000)
    epochs: int = 200  # passes over the N examples (paper: 200)
    hidden: int = 512  # units in the MLP's hidden layer (not given in the paper)
    lr: float = 1e-3  # Adam learning rate (not given in the paper)
    batch_size: int = 128  # examples per Adam step (not given in the paper)
    seed: int = 0  # seeds the labels, the MLP's initialisation and its data order

    def validate(self) -> ProbeConfig:
        for name, value, lo in (("--n", self.n, 2), ("--epochs", self.epochs, 1), ("--hidden", self.hidden, 1),
                                ("--batch-size", self.batch_size, 1), ("--seed", self.seed, 0)):
            if not isinstance(value, int) or value < lo:
                raise UsageError(f"probe {name} {value!r} must be an integer of at least {lo}")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr <= 10):
            raise UsageError(f"probe --lr {self.lr!r} is outside (0, 10]")
        return self


# ---------------------------------------------------------------------------------------- the probe


def random_binary_labels(n: int, seed: int = 0) -> torch.Tensor:
    """n fixed labels in {0, 1}, each 1 with probability 1/2: the same for the same (n, seed)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (n,), generator=g)


@torch.no_grad()
def representation(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The penultimate representation (N, D) of images (N, C, H, W) in [0,1], in eval mode."""
    device = next(model.parameters()).device
    with frozen(model, "eval"):
        parts = [model.features(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(parts)  # (N, D)


def standardize(features: torch.Tensor) -> torch.Tensor:
    """Center each dimension, then divide by one global scale (the root mean square)."""
    centered = features - features.mean(0, keepdim=True)
    scale = centered.pow(2).mean().sqrt().clamp_min(1e-12)
    return centered / scale


def fit_random_labels(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    hidden: int = 512,
    epochs: int = 200,
    lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> float:
    """Train Linear(D, hidden) -> ReLU -> Linear(hidden, 2) on (features, labels); return accuracy in %.

    The global RNG (CPU and every CUDA device) is left as it was: the MLP is initialised on the CPU
    inside a forked CPU RNG whose generator alone is seeded with `seed` (torch.manual_seed would
    reseed every CUDA generator too), then moved to `device`.
    """
    if features.dim() != 2 or len(features) != len(labels):
        raise ValueError(f"features (N, D) and labels (N,) expected, got {tuple(features.shape)} and "
                         f"{tuple(labels.shape)}")
    x = standardize(features.float()).to(device)
    y = labels.to(device)
    n = len(x)
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)  # the CPU generator only
        mlp = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, 2))
    mlp = mlp.to(device)
    optimizer = torch.optim.Adam(mlp.parameters(), lr=lr)
    order_gen = torch.Generator().manual_seed(seed + 1)
    mlp.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=order_gen).to(device)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            loss = F.cross_entropy(mlp(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    mlp.eval()
    with torch.no_grad():
        correct = sum((mlp(x[i : i + 4096]).argmax(1) == y[i : i + 4096]).sum().item() for i in range(0, n, 4096))
    return 100.0 * correct / n


# -------------------------------------------------------------------------------------------- runs


def probe_run(run_dir: str | Path, cfg: ProbeConfig, device: str = "auto", data_dir: str | None = None) -> dict:
    """{"accuracy": %, "n_examples", "dim"} of one trained run."""
    dev = resolve_device(device)
    run_cfg = load_run_config(run_dir)
    model = load_run_model(run_dir, dev)
    x, _ = load_data(run_cfg.dataset, "train", data_dir or run_cfg.data_dir, limit=cfg.n,
                     image_size=run_cfg.image_size)
    if len(x) < cfg.n:
        log.warning("%s: %s has only %d training examples; probing all of them instead of %d",
                    run_dir, run_cfg.dataset, len(x), cfg.n)
    feats = representation(model, x)  # (N, D)
    labels = random_binary_labels(len(x), cfg.seed)
    acc = fit_random_labels(feats, labels, hidden=cfg.hidden, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                            seed=cfg.seed, device=dev)
    log.info("probe %s: %.2f%% of %d random labels fitted (D=%d)", run_dir, acc, len(x), feats.shape[1])
    return {"accuracy": acc, "n_examples": len(x), "dim": feats.shape[1]}


def probe_runs(run_dirs: list[str | Path], cfg: ProbeConfig, device: str = "auto",
               data_dir: str | None = None) -> dict:
    """probe.json's content: {"n", "epochs", ..., "runs": {RUN_DIR: {"accuracy": %, ...}}}."""
    cfg.validate()
    check_finished(run_dirs)
    runs = {str(r): probe_run(r, cfg, device, data_dir) for r in run_dirs}
    return {**asdict(cfg), "runs": runs}


def probe_table(result: dict, labels: dict[str, str] | None = None) -> str:
    labels = labels or {}
    rows = [[labels.get(r, r), f"{v['accuracy']:.2f}", str(v["n_examples"]), str(v["dim"])]
            for r, v in result["runs"].items()]
    return format_table(["run", "random labels fitted (accuracy %)", "examples", "feature dim"], rows)
