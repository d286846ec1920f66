"""Transfer attacks (the paper's Table 5): craft on one run, evaluate on every other, for each eps.

The off-diagonal cells are black-box: PGD crafts adversarial examples on the source model alone
(every example any target still classifies correctly; all steps, no early stop, so they go deep
into the source's wrong side), and the target classifies them. The diagonal is the white-box
error, measured as `iat eval` does. Every cell is the worst case with the clean error: an example
the target misclassifies clean is an error. A defense that masks gradients shows black-box cells
stronger than its white-box diagonal.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from iat.attacks import PGD, STEP_RULE, AttackBudget
from iat.attacks.worstcase import error_pct, predict, survivors
from iat.fp32 import fp32_evaluation
from iat.report import format_table
from iat.robustness.common import budgets_at, run_labels, short_eps
from iat.rundir.read import load_runs

log = logging.getLogger(__name__)

TRANSFER_JSON = "transfer.json"


def transfer_correct(source: nn.Module, targets: list[nn.Module], x: torch.Tensor, y: torch.Tensor, *,
                     correct: list[torch.Tensor], budget: AttackBudget, batch_size: int = 500, seed: int = 0,
                     progress: bool = False) -> list[torch.Tensor]:
    """For each target: still correct on PGD examples crafted on `source` (and clean, per `correct`).

    One PGD run of `budget.steps` steps per example, all steps, no early stop (restarts unused).
    """
    out = [c.clone() for c in correct]
    if budget.eps == 0 or not targets:
        return out
    todo = torch.stack(out).any(0).nonzero().flatten()  # examples some target still gets right
    attack = PGD(source, budget.eps, budget.step_size, budget.steps)
    torch.manual_seed(seed)
    for i in tqdm(range(0, len(todo), batch_size), desc="transfer", disable=None if progress else True, leave=False):
        idx = todo[i : i + batch_size]
        x_adv = attack(x[idx], y[idx])  # the attack freezes the source (iat.attacks.core.frozen)
        for target, c in zip(targets, out):
            c[idx] &= predict(target, x_adv, batch_size) == y[idx]
    return out


@fp32_evaluation()
def transfer_matrix(run_dirs: list[str | Path], eps_list: list[float], steps: int = 20, *,
                    step_size: float | None = None, limit: int | None = None, device: str = "auto",
                    data_dir: str | None = None, batch_size: int = 500, progress: bool = False) -> dict:
    """transfer.json's content: error (%) of every target run on PGD examples of every source run.

    step_size None: eps/4 at each eps. Sources are seeded with their training seed.
    Usage: `transfer_matrix(["runs/pgd", "runs/iat-mixup"], [2/255, 5/255, 10/255])`.
    """
    budgets = budgets_at(eps_list, steps, step_size)
    runs = load_runs(run_dirs, limit, device, data_dir=data_dir, min_runs=2)
    with torch.no_grad():
        clean = [predict(m, runs.x, batch_size) == runs.y for m in runs.models]
    points = []
    for budget in budgets:
        eps = budget.eps
        for s, (source, cfg) in enumerate(zip(runs.models, runs.configs)):
            others = [t for t in range(len(runs.names)) if t != s]
            white = survivors(source, runs.x, runs.y, budget, correct=clean[s], batch_size=batch_size,
                              seed=cfg.seed, progress=progress, desc="white-box")[-1]
            black = transfer_correct(source, [runs.models[t] for t in others], runs.x, runs.y,
                                     correct=[clean[t] for t in others], budget=budget, batch_size=batch_size,
                                     seed=cfg.seed, progress=progress)
            cells = {s: white, **dict(zip(others, black))}
            for t in range(len(runs.names)):
                points.append({"eps": eps, "source": runs.names[s], "target": runs.names[t],
                               "error": error_pct(cells[t])})
            log.info("eps %s, source %s: %s", short_eps(eps), runs.names[s],
                     ", ".join(f"{p['target']} {p['error']:.2f}%" for p in points[-len(runs.names):]))
    return {"steps": steps, "step_size": step_size, "step_size_rule": STEP_RULE if step_size is None else "fixed",
            "dataset": runs.dataset, "split": "test", "n_examples": len(runs.x),
            "counting": "an example is an error if the target misclassifies it clean or on the source's "
            "adversarial example; source == target is the white-box error", "points": points}


def transfer_table(result: dict) -> str:
    """The paper's Table 5 as markdown: rows source (attack) runs, columns eps x target runs; error %."""
    names, eps_values, cell = [], [], {}
    for p in result["points"]:
        for n in (p["source"], p["target"]):
            if n not in names:
                names.append(n)
        if p["eps"] not in eps_values:
            eps_values.append(p["eps"])
        cell[p["eps"], p["source"], p["target"]] = p["error"]
    eps_values.sort()
    labels = run_labels(names)
    header = ["Attack \\ Target"] + [f"ε={short_eps(e)} {labels[t]}" for e in eps_values for t in names]
    rows = []
    for s in names:
        row = [labels[s]]
        for e in eps_values:
            for t in names:
                v = cell.get((e, s, t))
                row.append("-" if v is None else f"{v:.2f}" + ("*" if s == t else ""))
        rows.append(row)
    return format_table(header, rows) + "\n\n* white-box (source = target)"
