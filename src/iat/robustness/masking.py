"""An automatic gradient-masking audit: the checks of Athalye et al. and AutoAttack's flags, as numbers.

A model can look robust because the attack cannot use its gradients (shattered, stochastic or
vanishing gradients; Athalye, Carlini & Wagner 2018, https://arxiv.org/abs/1802.00420) rather than
because it is. Each check (iat.robustness.checks) runs an experiment whose outcome is known for an
honest model and says pass, warn or fail with the numbers and one sentence on what they mean:

- deterministic: the same input gives the same logits (a randomized model needs EOT attacks).
- logits: the outputs are logits, not probabilities (AutoAttack's flag; probabilities saturate).
- input-gradients: the loss has a non-zero input gradient at the examples attacked.
- single-vs-iterative: PGD is at least as strong as FGSM.
- steps: PGD's error does not fall as steps grow, and has stopped rising by the reported step count.
- large-eps: error reaches about 100% at a large eps (any image can be reached).
- transfer: white-box PGD beats PGD crafted on a separate surrogate model (black box).
- margin-loss: PGD on the DLR loss, which cannot saturate, is not much stronger than on cross-entropy.
- autoattack (optional): AutoAttack is not much stronger than PGD.

The verdict is `fail` if any check fails (the model shows masking), `warn` if any warns.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from iat.attacks import STEP_RULE, AttackBudget, dlr_loss, frozen, margin_loss, require_autoattack
from iat.attacks.worstcase import error_pct, predict, survivors
from iat.errors import UsageError
from iat.evaluate import correct_under
from iat.fp32 import fp32_evaluation
from iat.report import format_table
from iat.robustness.checks import (
    STATUSES,
    Check,
    check_autoattack,
    check_deterministic,
    check_gradients,
    check_large_eps,
    check_logits,
    check_margin_loss,
    check_single_vs_iterative,
    check_steps,
    check_transfer,
)
from iat.robustness.surrogate import SURROGATE, train_surrogate
from iat.robustness.transfer import transfer_correct
from iat.rundir import files, outdir
from iat.rundir.read import load_runs

AUDIT_JSON = "audit.json"
DEFAULT_STEPS_LIST = (1, 2, 5, 10, 20, 50, 100)
DEFAULT_LIMIT = 1000  # test examples audited by default
LARGE_STEPS = 20  # PGD steps at the large eps, at least


def default_large_eps(eps: float) -> float:
    """8 x eps, at least 0.25 (64/255), at most 1."""
    return min(1.0, max(8 * eps, 0.25))


def _large_budget(budget: AttackBudget, steps_list, large_eps: float | None, autoattack: bool) -> AttackBudget:
    """UsageError for a bad option; returns the budget of the large-eps check."""
    if budget.eps <= 0:
        raise UsageError(f"eps {budget.eps:g} must be in (0, 1] for an audit")
    if not steps_list or any(k < 1 for k in steps_list):
        raise UsageError(f"steps list {list(steps_list)} must be at least 1")
    large_eps = default_large_eps(budget.eps) if large_eps is None else large_eps
    if not budget.eps < large_eps:
        raise UsageError(f"large eps {large_eps:g} must be in ({budget.eps:g}, 1]: larger than the audited eps")
    if autoattack:
        require_autoattack()
    return AttackBudget.at(large_eps, steps=max(budget.steps, LARGE_STEPS))


@fp32_evaluation()
def audit_model(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    budget: AttackBudget,
    *,
    surrogate: nn.Module | None = None,
    steps_list: tuple[int, ...] = DEFAULT_STEPS_LIST,
    large_eps: float | None = None,
    autoattack: bool = False,
    batch_size: int = 500,
    seed: int = 0,
    progress: bool = False,
    surrogate_name: str = "surrogate",
) -> dict:
    """Run every check on `model` (images in [0,1] -> logits) over (x, y); audit.json's content.

    budget: the threat model's radius, the PGD step and the step count reported elsewhere (e.g.
    `AttackBudget.at(8/255, steps=20)`, step eps/4); steps_list: step counts of the convergence
    check; large_eps: the radius at which error must reach ~100% (default 8 x eps, at least 0.25);
    surrogate: a separately trained model for the transfer check (skipped without one); autoattack:
    add the AutoAttack check. Usage: `audit_model(model, x, y, budget, surrogate=other)["verdict"]`.
    """
    large = _large_budget(budget, steps_list, large_eps, autoattack)
    eps, steps = budget.eps, budget.steps
    ks = sorted(set(steps_list) | {steps})
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    checks: list[Check] = []
    with frozen(model, "eval"):
        checks.append(check_deterministic(model, x[:batch_size], y[:batch_size]))
        checks.append(check_logits(model, x[:batch_size]))
        clean = predict(model, x, batch_size) == y
        attacked = clean.nonzero().flatten()
        checks.append(check_gradients(model, x[attacked], y[attacked], eps, batch_size))

        def pgd(b: AttackBudget, **kw) -> torch.Tensor:
            return survivors(model, x, y, b, correct=clean, batch_size=batch_size, seed=seed, progress=progress, **kw)

        fgsm = pgd(AttackBudget.fgsm(eps), random_start=False, desc="fgsm")[-1]
        longest = budget.with_steps(ks[-1])
        best = dict(zip(ks, pgd(longest, record=ks, desc="pgd (worst case)")))
        plain = dict(zip(ks, pgd(longest, record=ks, early_stop=False, desc="pgd (plain)")))
        white = best[steps]
        checks.append(check_single_vs_iterative(fgsm, white, steps))
        checks.append(check_steps(plain, best, steps))
        checks.append(check_large_eps(pgd(large, desc="large eps")[-1], large.eps, large.steps))
        if surrogate is not None:
            black = transfer_correct(surrogate.to(device), [model], x, y, correct=[clean], budget=budget,
                                     batch_size=batch_size, seed=seed, progress=progress)[0]
            # like for like: the transfer example counts at its final point, so the white-box one does too
            checks.append(check_transfer(plain[steps], black, steps, surrogate_name))
        loss_fn = dlr_loss if model(x[:1]).shape[1] >= 3 else margin_loss
        dlr = pgd(budget, loss_fn=loss_fn, desc="pgd (dlr)")[-1]
        checks.append(check_margin_loss(white, dlr, steps))
        if autoattack:
            aa = correct_under(model, x, y, "autoattack", budget=budget, correct_clean=clean, batch_size=batch_size,
                               seed=seed, progress=progress)
            checks.append(check_autoattack(white, aa, steps))
    statuses = {c.status for c in checks}
    verdict = "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"
    return {"verdict": verdict, "n_examples": len(x), "clean_error": error_pct(clean), "eps": eps,
            "step_size": budget.step_size, "step_size_rule": "fixed", "steps": steps, "large_eps": large.eps,
            "seed": seed, "checks": [asdict(c) for c in checks]}


@fp32_evaluation()
def audit(
    run_dir: str | Path,
    *,
    eps: float | None = None,
    step_size: float | None = None,
    steps: int = 20,
    steps_list: tuple[int, ...] = DEFAULT_STEPS_LIST,
    large_eps: float | None = None,
    surrogate: str | Path | None = None,
    autoattack: bool = False,
    limit: int | None = DEFAULT_LIMIT,
    device: str = "auto",
    data_dir: str | None = None,
    batch_size: int = 500,
    progress: bool = False,
) -> dict:
    """Audit a run directory on its test split (first `limit` examples); audit.json's content.

    eps: default the run's training eps; step_size: default eps/4 (STEP_RULE); surrogate: a run
    directory for the transfer check (default: train a small ERM CNN for a minute, see SURROGATE).
    Writes nothing; see write_audit. Usage: `audit("runs/pgd")["verdict"]`.
    """
    dirs = [run_dir] + ([surrogate] if surrogate is not None else [])
    runs = load_runs(dirs, limit, device, data_dir=data_dir)
    cfg = runs.configs[0]
    if eps is None and cfg.eps == 0:
        raise UsageError(f"{run_dir} was trained at eps 0; give --eps")
    budget = AttackBudget.at(cfg.eps if eps is None else eps, step_size, steps)
    _large_budget(budget, steps_list, large_eps, autoattack)
    if surrogate is not None:
        surrogate_model, surrogate_name = runs.models[1], os.fspath(surrogate)
    else:
        surrogate_model = train_surrogate(cfg.dataset, data_dir or cfg.data_dir, device, seed=cfg.seed + 1,
                                          progress=progress)
        surrogate_name = f"trained for this audit: {SURROGATE}"
    report = audit_model(runs.models[0], runs.x, runs.y, budget, surrogate=surrogate_model, steps_list=steps_list,
                         large_eps=large_eps, autoattack=autoattack, batch_size=batch_size, seed=cfg.seed,
                         progress=progress, surrogate_name=surrogate_name)
    report["step_size_rule"] = STEP_RULE if step_size is None else "fixed"
    return {"run": os.fspath(run_dir), "dataset": cfg.dataset, "split": "test", **report}


def audit_table(result: dict) -> str:
    """The checks as a markdown table: check, status, what was measured and what it means."""
    rows = [[c["name"], c["status"].upper() if c["status"] != "pass" else "pass", c["detail"]]
            for c in result["checks"]]
    return format_table(["check", "status", "finding"], rows) + f"\n\nverdict: {result['verdict']}"


def write_audit(result: dict, out: str | Path) -> Path:
    out = outdir.make_dir(out)
    files.write_json(out / AUDIT_JSON, result)
    return out / AUDIT_JSON


__all__ = ["AUDIT_JSON", "DEFAULT_LIMIT", "DEFAULT_STEPS_LIST", "STATUSES", "SURROGATE", "audit", "audit_model",
           "audit_table", "default_large_eps", "write_audit"]
