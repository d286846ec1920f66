"""Tables in the paper's format: rows are training methods, columns attacks, cells `mean ± std`."""

from __future__ import annotations

import statistics

from iat.methods import METHODS

ATTACK_COLUMNS = {"clean": "No attack", "fgsm": "FGSM", "pgd7": "PGD (7 steps)", "pgd20": "PGD (20 steps)",
                  "autoattack": "AutoAttack"}


def attack_column(attack: str, autoattack_n: int | None = None) -> str:
    """A column's header; AutoAttack's says on how many images it ran (it runs on a subset: it is slow)."""
    name = ATTACK_COLUMNS.get(attack, attack)
    if attack == "autoattack" and autoattack_n:
        name += f" (first {autoattack_n:,} test images)"
    return name


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def stat(values: list[float]) -> dict:
    """mean_std with the values it was made of, so a reader knows how many seeds stand behind it."""
    return {**mean_std(values), "values": values}


def format_cell(cell: dict | None, digits: int = 2) -> str:
    """One table cell: `mean ± std`; the mean alone where there is no std to give (a std of None, as in
    the paper's single runs, or one value behind the mean); '—' for no number."""
    if cell is None:
        return "—"
    if cell.get("std") is None or len(cell.get("values", (0, 0))) == 1:
        return f"{cell['mean']:.{digits}f}"
    return f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}"


def method_label(method: str, short: bool = False) -> str:
    """A method's row name in the paper's tables (iat.methods); `short` for plots, where
    "Interpolated Adversarial Training" becomes "IAT"."""
    head, *modifiers = method.split("+")
    if method not in METHODS and head in METHODS and modifiers:  # an experiment's variant, "pgd+awp+ema"
        label = " + ".join([METHODS[head].label] + [m.upper() for m in modifiers])
    else:
        label = METHODS[method].label if method in METHODS else method
    return label.replace("Interpolated Adversarial Training", "IAT") if short else label


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table, columns padded so it also reads as plain text."""
    cells = [header] + rows
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(header))]

    def line(r):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def whitebox_table(methods: dict[str, dict[str, dict[str, float]]], labels: dict[str, str],
                   attacks: list[str] | None = None, autoattack_n: int | None = None) -> str:
    """`methods[name][attack] = {"mean", "std"}` as the paper's Tables 1-4 (an AutoAttack column: on the first
    `autoattack_n` test images)."""
    attacks = attacks or [a for a in ATTACK_COLUMNS if a != "autoattack"]
    header = ["Training \\ Adversary"] + [attack_column(a, autoattack_n) for a in attacks]
    rows = [[labels.get(m, m)] + [format_cell(r.get(a)) for a in attacks] for m, r in methods.items()]
    return format_table(header, rows)
