"""Frobenius and spectral norms of every weight matrix, per layer in forward order (Section 4.4, Fig. 1).

The spectral complexity of Bartlett et al. (2017) is built from these two norms; the paper finds that
adversarial training makes them larger and Interpolated Adversarial Training brings them back
towards normal training. A convolution kernel (out, in, kh, kw) is reshaped to a matrix
(out, in*kh*kw); a linear layer's weight is already (out, in). Norms are computed exactly in float64:
Frobenius as sqrt(sum w^2), spectral as the largest singular value (`torch.linalg.matrix_norm(ord=2)`).

    rows = layer_norms(model, example=torch.zeros(1, 1, 28, 28))
    result = norms_of_runs(["runs/erm", "runs/pgd"]); plot_norms(result, "norms.png")
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from iat.analysis.figures import pyplot, readable, save_png
from iat.attacks import frozen
from iat.data import dataset_info
from iat.report import format_table
from iat.rundir.read import check_finished, load_run_config, load_run_model

log = logging.getLogger(__name__)

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


# ------------------------------------------------------------------------------------------ layers


def weight_layers(model: nn.Module, example: torch.Tensor | None = None) -> list[tuple[str, nn.Module]]:
    """(name, module) of every linear and convolution layer, in the order a forward pass uses them.

    With `example` (one input batch), the order is observed with forward hooks; without it, it is
    the order of registration, which for the models here differs only in where shortcut
    convolutions fall. Layers the forward pass never reaches come last, in registration order.
    """
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]
    if example is None:
        return layers
    seen: list[str] = []
    names = {id(m): name for name, m in layers}

    def hook(module, inputs, output):
        name = names[id(module)]
        if name not in seen:
            seen.append(name)

    handles = [m.register_forward_hook(hook) for _, m in layers]
    try:
        with frozen(model, "eval"), torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    by_name = dict(layers)
    return [(n, by_name[n]) for n in seen] + [(n, m) for n, m in layers if n not in seen]


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """A weight as a matrix: (out, in) stays, a kernel (out, in, kh, kw) becomes (out, in*kh*kw)."""
    return weight.detach().reshape(weight.shape[0], -1)


def matrix_norms(matrix: torch.Tensor) -> tuple[float, float]:
    """(Frobenius norm, spectral norm) of a 2-D tensor, exactly, in float64."""
    if matrix.dim() != 2:
        raise ValueError(f"expected a matrix, got shape {tuple(matrix.shape)}")
    m = matrix.detach().to("cpu", torch.float64)
    return torch.linalg.matrix_norm(m, ord="fro").item(), torch.linalg.matrix_norm(m, ord=2).item()


def layer_norms(model: nn.Module, example: torch.Tensor | None = None) -> list[dict]:
    """[{"layer", "shape", "frobenius", "spectral"}] for every weight matrix, in forward order."""
    rows = []
    for name, module in weight_layers(model, example):
        w = as_matrix(module.weight)  # (out, in) or (out, in*kh*kw)
        fro, spec = matrix_norms(w)
        rows.append({"layer": name, "shape": list(w.shape), "frobenius": fro, "spectral": spec})
    return rows


# -------------------------------------------------------------------------------------------- runs


def run_norms(run_dir: str | Path) -> list[dict]:
    """The per-layer norms of a trained run (see `layer_norms`)."""
    cfg = load_run_config(run_dir)
    info = dataset_info(cfg.dataset)
    model = load_run_model(run_dir, "cpu")
    example = torch.zeros(1, info.in_channels, info.image_size, info.image_size)
    return layer_norms(model, example)


def norms_of_runs(run_dirs: list[str | Path]) -> dict:
    """norms.json's content: {"runs": {RUN_DIR: [{"layer", "frobenius", "spectral", "shape"}, ...]}}."""
    check_finished(run_dirs)
    return {"runs": {str(r): run_norms(r) for r in run_dirs}}


# ------------------------------------------------------------------------------------------ report


def norms_table(result: dict, labels: dict[str, str] | None = None) -> str:
    """One row per layer; for each run a Frobenius and a spectral column."""
    labels = labels or {}
    runs = list(result["runs"])
    layers = [row["layer"] for row in result["runs"][runs[0]]]
    header = ["layer"] + [f"{labels.get(r, r)} {kind}" for r in runs for kind in ("frob.", "spec.")]
    rows = []
    for i, layer in enumerate(layers):
        cells = [layer]
        for r in runs:
            rr = result["runs"][r]
            cells += [f"{rr[i]['frobenius']:.2f}", f"{rr[i]['spectral']:.2f}"] if i < len(rr) else ["-", "-"]
        rows.append(cells)
    return format_table(header, rows)


def plot_norms(result: dict, path: str | Path, labels: dict[str, str] | None = None,
               title: str | None = None) -> None:
    """Figure 1's layout: Frobenius (left) and spectral (right) norm per layer, one line per run.

    A run's entry may carry "frobenius_std"/"spectral_std" (means over seeds): drawn as a band.
    """
    labels = labels or {}
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, name in ((axes[0], "frobenius", "Frobenius norm"), (axes[1], "spectral", "spectral norm")):
        for run, rows in result["runs"].items():
            xs = list(range(1, len(rows) + 1))
            ys = [row[key] for row in rows]
            ax.plot(xs, ys, marker="o", label=readable(labels.get(run, Path(run).name)))
            if rows and f"{key}_std" in rows[0]:
                sd = [row[f"{key}_std"] for row in rows]
                ax.fill_between(xs, [y - s for y, s in zip(ys, sd)], [y + s for y, s in zip(ys, sd)], alpha=0.2)
        ax.set_xlabel("layer (forward order)")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        n_layers = max(len(rows) for rows in result["runs"].values())
        if n_layers <= 12:
            ax.set_xticks(range(1, n_layers + 1))
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(readable(title))
    fig.tight_layout()
    save_png(fig, path)
