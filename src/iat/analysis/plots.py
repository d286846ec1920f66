"""The plots of `iat reproduce`'s report: our numbers beside the paper's, one picture per kind of table.

Each reads results.json's pieces only, so a report can be redrawn without the runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iat.analysis.figures import pyplot, readable, save_png
from iat.report import attack_column, method_label
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
        ax.set_title(attack_column(a, wb.get("autoattack", {}).get("n_examples")).replace(" (", "\n("), fontsize=9)
        ax.set_ylim(0, 100)
    axes[0][0].set_ylabel("error (%)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(readable(title), fontsize=9)
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
    ax.set_title(readable(title), fontsize=8)
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
    ax.set_title(readable(title), fontsize=8)
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
    fig.suptitle(readable(title), fontsize=9)
    fig.tight_layout()
    save_png(fig, path)


# One marker shape per method, so the methods are told apart in greyscale too (colour only helps).
MARKERS = {"erm": "o", "mixup": "s", "manifold-mixup": "D", "pgd": "^", "iat-mixup": "v", "iat-manifold-mixup": "P",
           "trades": "<", "mart": ">", "iat-trades": "*"}


def _mean_std(cell) -> tuple[float | None, float]:
    """(mean, std) of one of our cells ({"mean", "std"}) or a paper cell ([mean, std], a number or None)."""
    if cell is None:
        return None, 0.0
    if isinstance(cell, dict):
        return cell["mean"], cell.get("std") or 0.0
    mean, std = cell if isinstance(cell, list) else (cell, None)
    return mean, std or 0.0


def _robust_column(methods: dict[str, dict]) -> str | None:
    """The robust error to plot: PGD-20 (the paper's), else the longest PGD every method was measured with."""
    common = set.intersection(*(set(c) for c in methods.values())) if methods else set()
    if "clean" not in common:
        return None
    if "pgd20" in common:
        return "pgd20"
    pgd = sorted((int(a[3:]), a) for a in common if a.startswith("pgd") and a[3:].isdigit())
    return pgd[-1][1] if pgd else None


def plot_tradeoff(methods: dict[str, dict], path: Path, title: str, *, paper: dict | None = None,
                  autoattack_n: int | None = None) -> bool:
    """Clean error (x) against robust error (y), one marker shape per method, error bars = std over seeds.

    methods: {method: {"clean": cell, "pgd20": cell, "autoattack"?: cell}} (ours); paper: the paper's table
    (its rows' cells), drawn as hollow markers of the same shape. Filled in the method's colour: PGD-20; filled
    black: AutoAttack (on the first `autoattack_n` test images), with an arrow from the method's PGD-20 marker.
    """
    robust = _robust_column(methods)
    if robust is None:  # no clean error, or no PGD column, to plot
        return False
    plt = pyplot()
    from matplotlib.lines import Line2D

    # taller for many rows (an experiment's variants), so that the two legends on the right do not overlap
    fig, ax = plt.subplots(figsize=(8.4, max(5.2, 2.4 + 0.28 * len(methods))))
    prow = {r["method"]: r["cells"] for r in (paper or {}).get("rows", []) if r.get("method")}
    handles = []
    for i, (m, cells) in enumerate(methods.items()):
        # a variant ("pgd+awp") takes its method's marker; past ten rows the default cycle would repeat colours
        marker = MARKERS.get(m, MARKERS.get(m.split("+")[0], "X"))
        colour = f"C{i}" if len(methods) <= 10 else plt.get_cmap("tab20")(i % 20)
        style = dict(marker=marker, color=colour, markeredgecolor="black", markersize=9, capsize=3, linestyle="none")
        if cells.get("clean") is None or cells.get(robust) is None:
            continue
        cx, sx = _mean_std(cells.get("clean"))
        ry, sy = _mean_std(cells.get(robust))
        ax.errorbar(cx, ry, xerr=sx, yerr=sy, **style)
        if "autoattack" in cells:
            ay, say = _mean_std(cells["autoattack"])
            if ay > ry:  # an arrow from PGD-20 up to AutoAttack: how much robustness PGD-20 overstated
                ax.annotate("", xy=(cx, ay), xytext=(cx, ry),
                            arrowprops=dict(arrowstyle="->", color="0.3", lw=1, shrinkA=6, shrinkB=6))
            ax.errorbar(cx, ay, yerr=say, **{**style, "markerfacecolor": "black", "ecolor": colour})
        if m in prow:
            (px, psx), (py, psy) = _mean_std(prow[m].get("clean")), _mean_std(prow[m].get("pgd20"))
            if px is not None and py is not None:
                ax.errorbar(px, py, xerr=psx, yerr=psy, **{**style, "markerfacecolor": "none",
                                                           "markeredgecolor": colour, "markeredgewidth": 1.5})
        handles.append(Line2D([], [], marker=marker, color=colour, markeredgecolor="black", markersize=9,
                              linestyle="none", label=method_label(m, short=True)))
    grey = dict(color="0.55", markeredgecolor="black", markersize=9, linestyle="none")
    kinds = [Line2D([], [], marker="o", label=f"ours, PGD-{robust[3:]}", **grey)]
    if any("autoattack" in c for c in methods.values()):
        n = f" (first {autoattack_n:,} test images)" if autoattack_n else ""
        kinds.append(Line2D([], [], marker="o", label=f"ours, AutoAttack{n}", **{**grey, "color": "black"}))
    if prow:
        kinds.append(Line2D([], [], marker="o", markerfacecolor="none", label="paper, PGD-20",
                            **{**grey, "markeredgecolor": "0.3"}))
    first = ax.legend(handles=handles, title="method", loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9)
    ax.add_artist(first)
    ax.legend(handles=kinds, title="marker", loc="lower left", bbox_to_anchor=(1.02, 0.0), fontsize=9)
    ax.set_xlabel("clean error (%)  →  worse accuracy", fontsize=10)
    ax.set_ylabel("robust error (%)  →  less robust", fontsize=10)
    lo = min(line.get_ydata()[0] for line in ax.lines if len(line.get_ydata()))
    ax.set_ylim(max(0, lo - 8), 102)  # room for the spread of the robust methods, which sit close together
    ax.grid(alpha=0.3)
    ax.set_title(readable(title) + "\nbottom left is best; error bars: std over seeds", fontsize=9)
    fig.tight_layout()
    save_png(fig, path)
    return True
