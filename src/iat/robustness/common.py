"""What the sweeps, the transfer table and the audit share: budgets per eps, the runs' eps, labels."""

from __future__ import annotations

from pathlib import Path

from iat.attacks import AttackBudget
from iat.errors import UsageError
from iat.rundir.read import Runs


def budgets_at(eps_list: list[float], steps: int, step_size: float | None = None) -> list[AttackBudget]:
    """One PGD budget per eps, ascending and deduplicated (step None: STEP_RULE at each eps).

    Built before any run is loaded, so a bad eps or step count fails before any work.
    """
    if not eps_list:
        raise UsageError("the eps list is empty; give values like 1/255,2/255,10/255")
    return [AttackBudget.at(eps, step_size, steps) for eps in sorted(set(eps_list))]


def common_eps(runs: Runs) -> float:
    """The training eps the runs share; UsageError (asking for --eps) if they differ."""
    values = {c.eps for c in runs.configs}
    if len(values) > 1:
        raise UsageError(f"the runs were trained at different eps ({', '.join(f'{v:g}' for v in sorted(values))}); "
                         "give --eps")
    return values.pop()


def short_eps(eps: float) -> str:
    """The short form for table headers: `0.1` for a short decimal, else `8/255` for whole 255ths.

    Not iat.units.format_eps, which adds the decimal (`8/255 = 0.0314`) and writes 0.25 as `1/4 = 0.2500`.
    """
    k = eps * 255
    if round(eps, 3) == eps or abs(k - round(k)) > 1e-6:
        return f"{eps:g}"
    return f"{round(k)}/255"


def run_labels(names: list[str]) -> dict[str, str]:
    """Short row labels: each run directory's last path part, or the whole path where two share it."""
    base = {n: Path(n).name or n for n in names}
    clash = {b for b in base.values() if list(base.values()).count(b) > 1}
    return {n: (n if b in clash else b) for n, b in base.items()}
