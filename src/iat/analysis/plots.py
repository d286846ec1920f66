"""The plots of `iat reproduce`'s report: our numbers beside the paper's, one picture per kind of table.

Each reads results.json's pieces only, so a report can be redrawn without the runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iat.analysis.figures import pyplot, save_png
from iat.report import ATTACK_COLUMNS, method_label
from iat.units import format_eps


def _names(methods: list[str]) -> list[str]:
    return [method_label(m, short=True) for m in methods]


def _bars(ax, names: list[str], ours: list[float], ours_sd: list[float], paper: list[float | None]):
    x = np.arange(len(names))
    has_paper = any(p is not None for p in paper)
    w = 0.4 if has_paper else 0.7
    ax.bar(x - (w / 2 if has_paper else 0), ours, w, yerr=ours_sd, label="ours", color="C0")
    if has_paper:
        ax.bar(x + w / 2, [p if p is not None else 0 for p in paper], w, label="paper", color="C1", alpha=0.7)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
    ax.grid(axis="y", alpha=0.3)


def plot_whitebox(wb: dict, paper: dict | None, path: Path, title: str) -> None:
    plt = pyplot()
    methods = list(wb["methods"])
    attacks = list(next(iter(wb["methods"].values())))
    prow = {r["method"]: r for r in (paper or {}).get("rows", []) if r["method"]}
    fig, axes = plt.subplots(1, len(attacks), figsize=(3.2 * len(attacks), 3.6), squeeze=False)
    for ax, a in zip(axes[0], attacks):
        cells = [prow[m]["cells"].get(a) if m in prow else None for m in methods]
        _bars(ax, _names(methods), [wb["methods"][m][a]["mean"] for m in methods],
              [wb["methods"][m][a]["std"] for m in methods], [c[0] if c else None for c in cells])
        ax.set_title(ATTACK_COLUMNS.get(a, a))
        ax.set_ylim(0, 100)
    axes[0][0].set_ylabel("error (%)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_png(fig, path)


def plot_probe(probe: dict, prow: dict, path: Path, title: str) -> None:
    plt = pyplot()
    methods = list(probe["methods"])
    fig, ax = plt.subplots(figsize=(5, 3.6))
    _bars(ax, _names(methods), [probe["methods"][m]["accuracy"]["mean"] for m in methods],
          [probe["methods"][m]["accuracy"]["std"] for m in methods],
          [prow[m]["accuracy"] if m in prow else None for m in methods])
    ax.set_ylabel("random labels fitted (accuracy %)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def plot_sweep(sweep: dict, paper: dict | None, methods: list[str], axis: str, path: Path, title: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    prow = {r["method"]: r for r in (paper or {}).get("rows", [])}
    for i, m in enumerate(methods):
        pts = sorted((p for p in sweep["points"] if p["method"] == m), key=lambda p: p[axis])
        xs = [p[axis] * 255 if axis == "eps" else p[axis] for p in pts]
        ax.errorbar(xs, [p["mean"] for p in pts], yerr=[p["std"] for p in pts], marker="o", color=f"C{i}",
                    label=f"{method_label(m, short=True)} (ours)")
        if m in prow:
            keys = sorted(prow[m]["cells"], key=float)
            ax.plot([float(k) for k in keys], [prow[m]["cells"][k] for k in keys], "--", marker="x",
                    color=f"C{i}", alpha=0.6, label=f"{method_label(m, short=True)} (paper)")
    ax.set_xlabel("attack eps (/255)" if axis == "eps" else "PGD steps")
    if axis == "steps":
        ax.set_xscale("log")
    ax.set_ylabel("error (%)")
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def plot_transfer(t: dict, paper: dict | None, methods: list[str], path: Path, title: str) -> None:
    plt = pyplot()
    eps_list = sorted({p["eps"] for p in t["points"]})
    cell = {(p["eps"], p["source"], p["target"]): p["mean"] for p in t["points"]}
    grids = [("ours", e, [[cell.get((e, s, g), np.nan) for g in methods] for s in methods]) for e in eps_list]
    if paper:
        prow = {r["method"]: r for r in paper["rows"]}
        grids += [("paper", e / 255, [[prow[s]["cells"][str(e)][g] for g in methods] for s in methods])
                  for e in paper["eps_255"]]
    cols = max(len(eps_list), len(paper["eps_255"]) if paper else 0)
    rows = 2 if paper else 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.1 * rows), squeeze=False)
    names = _names(methods)
    for idx, (who, e, grid) in enumerate(grids):
        ax = axes[0 if who == "ours" else 1][idx if who == "ours" else idx - len(eps_list)]
        ax.imshow(np.array(grid, dtype=float), vmin=0, vmax=100, cmap="viridis")
        for i in range(len(methods)):
            for j in range(len(methods)):
                ax.text(j, i, f"{grid[i][j]:.1f}", ha="center", va="center", color="w", fontsize=8)
        ax.set_title(f"{who}: eps {format_eps(e, '255')}/255", fontsize=9)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
        ax.set_yticks(range(len(methods)))
        ax.set_yticklabels(names, fontsize=7)
        ax.set_xlabel("target", fontsize=7)
        ax.set_ylabel("attack", fontsize=7)
    for r in axes:
        for ax in r:
            if not ax.images:
                ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_png(fig, path)
