"""An automatic gradient-masking audit: the checks of Athalye et al. and AutoAttack's flags, as numbers.

A model can look robust because the attack cannot use its gradients (shattered, stochastic or
vanishing gradients; Athalye, Carlini & Wagner 2018, https://arxiv.org/abs/1802.00420) rather than
because it is. Each check runs an experiment whose outcome is known for an honest model and
says pass, warn or fail with the numbers and one sentence on what they mean:

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
Comparisons of two attacks allow for sampling noise: a gap counts only if it exceeds both a fixed
number of percentage points and a multiple of its paired standard error.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from iat import runio
from iat.attacks.base import ce_loss
from iat.attacks.losses import dlr_loss, margin_loss
from iat.attacks.worstcase import attack_mode, error_pct, predict, survivors
from iat.errors import UsageError
from iat.report import format_table
from iat.robustness.runs import STEP_RULE, default_step, short_eps
from iat.robustness.transfer import transfer_correct

log = logging.getLogger(__name__)

AUDIT_JSON = "audit.json"
STATUSES = ("pass", "warn", "fail")

# Thresholds, in percentage points of error unless said otherwise.
WARN_GAP, FAIL_GAP = 2.0, 5.0  # a stronger-than-expected attack: gap to warn at, to fail at
WARN_SE, FAIL_SE = 2.0, 3.0  # ... and the gap must also exceed this many paired standard errors
AUTOATTACK_WARN_GAP, AUTOATTACK_FAIL_GAP = 3.0, 10.0  # AutoAttack is expected to be a little stronger
LARGE_EPS_PASS, LARGE_EPS_WARN = 99.0, 95.0  # error at the large eps: pass at or above, warn at or above
BAD_GRAD_WARN, BAD_GRAD_FAIL = 0.01, 0.10  # fraction of attacked examples with zero/vanishing gradients
VANISHING = 1e-4  # margin gradient "vanishing": eps * ||grad||_1 < VANISHING * |margin|
LOGITS_WARN, LOGITS_FAIL = 1e-5, 1e-3  # relative logit difference between two identical passes
DEFAULT_STEPS_LIST = (1, 2, 5, 10, 20, 50, 100)
DEFAULT_LIMIT = 1000  # test examples audited by default
# The surrogate trained when none is given: a small CNN, standard (ERM) training, a few epochs.
SURROGATE = {"method": "erm", "arch": "cnn-small", "width": 16, "epochs": 5, "batch_size": 64, "lr": 0.05,
             "train_size": 5000}


def eps_text(eps: float) -> str:
    """`0.8`, or `8/255 = 0.0314` where the short form is a fraction."""
    short = short_eps(eps)
    return short if short == f"{eps:g}" else f"{short} = {eps:.4f}"


def default_large_eps(eps: float) -> float:
    """8 x eps, at least 0.25 (64/255), at most 1."""
    return min(1.0, max(8 * eps, 0.25))


@dataclass
class Check:
    name: str
    status: str  # pass | warn | fail
    detail: str  # the numbers and one sentence on what they mean
    values: dict = field(default_factory=dict)


def _paired_gap(weak: torch.Tensor, strong: torch.Tensor) -> tuple[float, float]:
    """(error(strong) - error(weak), its paired standard error), in points, from 'still correct' masks."""
    n = weak.numel()
    gap = error_pct(strong) - error_pct(weak)
    discordant = int((weak != strong).sum().item())
    return gap, 100.0 * math.sqrt(discordant) / n if n else 0.0


def _gap_status(gap: float, se: float, warn: float = WARN_GAP, fail: float = FAIL_GAP) -> str:
    if gap > max(fail, FAIL_SE * se):
        return "fail"
    if gap > max(warn, WARN_SE * se):
        return "warn"
    return "pass"


# -------------------------------------------------------------------------------------------- checks


def check_deterministic(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Check:
    with torch.no_grad():
        a, b = model(x), model(x)
    flips = int((a.argmax(1) != b.argmax(1)).sum().item())
    rel = ((a - b).abs().max() / (a.abs().max() + 1e-12)).item() if a.numel() else 0.0
    values = {"n": len(x), "prediction_flips": flips, "max_relative_logit_diff": rel}
    if flips or rel > LOGITS_FAIL:
        return Check("deterministic", "fail", f"two passes over the same {len(x)} images differ in {flips} "
                     f"predictions (relative logit difference {rel:.2g}): a randomized model hides its gradient "
                     "in noise; attack it with expectation over transformation before trusting any number.", values)
    if rel > LOGITS_WARN:
        return Check("deterministic", "warn", f"two passes differ by {rel:.2g} (relative) in the logits but in no "
                     "prediction: likely non-deterministic kernels, harmless unless the differences grow.", values)
    return Check("deterministic", "pass", f"two passes over the same {len(x)} images give the same logits: "
                 "one attack run measures the model.", values)


def check_logits(model: nn.Module, x: torch.Tensor) -> Check:
    with torch.no_grad():
        out = model(x)
    looks_like_probs = bool(out.min() >= 0 and out.max() <= 1 and ((out.sum(1) - 1).abs() < 1e-4).all())
    values = {"min": out.min().item(), "max": out.max().item()}
    if looks_like_probs:
        return Check("logits", "warn", f"the outputs lie in [{values['min']:.3g}, {values['max']:.3g}] and sum to 1: "
                     "they look like probabilities, on which cross-entropy saturates; attack the logits.", values)
    return Check("logits", "pass", f"the outputs range over [{values['min']:.3g}, {values['max']:.3g}] and are "
                 "not probabilities: attacks get the logits, as they should.", values)


def check_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, batch_size: int) -> Check:
    """Zero cross-entropy gradients, and zero or vanishing margin gradients, at the attacked examples."""
    zero_ce = bad_margin = 0
    ratios = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xb)
            (g_ce,) = torch.autograd.grad(ce_loss(logits, y[i : i + batch_size]), xb, retain_graph=True)
            (g_m,) = torch.autograd.grad(margin_loss(logits, y[i : i + batch_size]), xb)
        z_y = logits.detach().gather(1, y[i : i + batch_size, None]).squeeze(1)
        others = logits.detach().scatter(1, y[i : i + batch_size, None], float("-inf")).amax(1)
        margin = (z_y - others).abs()
        l1_ce, l1_m = g_ce.flatten(1).abs().sum(1), g_m.flatten(1).abs().sum(1)
        ratio = eps * l1_m / margin.clamp_min(1e-12)  # first-order change over the ball / distance to go
        zero_ce += int((l1_ce == 0).sum().item())
        bad_margin += int((ratio < VANISHING).sum().item())
        ratios.append(ratio)
    n = len(x)
    frac_ce, frac_m = (zero_ce / n, bad_margin / n) if n else (0.0, 0.0)
    median = torch.cat(ratios).median().item() if ratios else float("nan")
    values = {"n": n, "zero_ce_fraction": frac_ce, "zero_or_vanishing_margin_fraction": frac_m,
              "median_first_order_ratio": median}
    worst = max(frac_ce, frac_m)
    numbers = (f"of {n} attacked examples, {100 * frac_ce:.1f}% have a zero cross-entropy gradient and "
               f"{100 * frac_m:.1f}% a zero or vanishing margin gradient (median eps·‖grad‖₁/margin {median:.3g})")
    if worst > BAD_GRAD_FAIL:
        return Check("input-gradients", "fail", numbers + ": gradient attacks cannot move these examples, so their "
                     "robustness is unmeasured, not shown (masking).", values)
    if worst > BAD_GRAD_WARN:
        return Check("input-gradients", "warn", numbers + ": a few examples give gradient attacks nothing to "
                     "follow; their robustness rests on other attacks.", values)
    return Check("input-gradients", "pass", numbers + ": gradient attacks have a direction to follow.", values)


def check_single_vs_iterative(fgsm: torch.Tensor, pgd: torch.Tensor, steps: int) -> Check:
    gap, se = _paired_gap(pgd, fgsm)  # fgsm stronger than pgd is the suspicious direction
    status = _gap_status(gap, se)
    values = {"fgsm_error": error_pct(fgsm), f"pgd{steps}_error": error_pct(pgd), "gap": gap, "se": se}
    numbers = f"FGSM {values['fgsm_error']:.2f}%, PGD-{steps} {values[f'pgd{steps}_error']:.2f}%"
    if status == "pass":
        return Check("single-vs-iterative", status, numbers + ": the iterative attack is at least as strong as "
                     "one step, as it is when gradients are informative.", values)
    return Check("single-vs-iterative", status, numbers + f": one step beats {steps} ({gap:.2f} points, se "
                 f"{se:.2f}), a sign that the gradient near the data points misleads iterative attacks.", values)


def check_steps(plain: dict[int, torch.Tensor], best: dict[int, torch.Tensor], steps: int) -> Check:
    """plain[k]: correct at step k of plain PGD; best[k]: correct at every step up to k."""
    ks = sorted(plain)
    worst_drop, drop_at, drop_se = 0.0, (ks[0], ks[0]), 0.0
    for i, a in enumerate(ks):
        for b in ks[i + 1 :]:
            gap, se = _paired_gap(plain[b], plain[a])  # error at a above error at b: a fall
            if gap > worst_drop:
                worst_drop, drop_at, drop_se = gap, (a, b), se
    k_max = ks[-1]
    rise, rise_se = _paired_gap(best[steps], best[k_max]) if steps in best and k_max > steps else (0.0, 0.0)
    values = {"plain_error": {str(k): error_pct(plain[k]) for k in ks},
              "worst_case_error": {str(k): error_pct(best[k]) for k in sorted(best)},
              "largest_fall": worst_drop, "fall_between": list(drop_at), "rise_after_reported": rise}
    curve = ", ".join(f"{k}: {error_pct(plain[k]):.2f}" for k in ks)
    fall_status = _gap_status(worst_drop, drop_se)
    if fall_status != "pass":
        return Check("steps", fall_status, f"PGD error by steps ({curve}) falls by {worst_drop:.2f} points from "
                     f"{drop_at[0]} to {drop_at[1]} steps: more optimization should never help the model, so its "
                     "loss surface misleads the attack.", values)
    rise_status = _gap_status(rise, rise_se)
    if rise_status != "pass":
        worst_curve = ", ".join(f"{k}: {error_pct(best[k]):.2f}" for k in sorted(best))
        return Check("steps", "warn", f"worst-case PGD error by steps ({worst_curve}) still rises {rise:.2f} points "
                     f"from {steps} to {k_max} steps, so PGD-{steps} underestimates the error; report the larger "
                     "step count (slow convergence can also mean obfuscated gradients).", values)
    converged = (f"has converged by {steps} steps" if k_max > steps
                 else f"was not tried beyond {steps} steps, so convergence is unchecked")
    return Check("steps", "pass", f"PGD error by steps ({curve}) does not fall with more steps and {converged}.",
                 values)


def check_large_eps(correct: torch.Tensor, large_eps: float, steps: int) -> Check:
    err = error_pct(correct)
    values = {"eps": large_eps, "error": err, "steps": steps}
    status = "pass" if err >= LARGE_EPS_PASS else "warn" if err >= LARGE_EPS_WARN else "fail"
    numbers = f"PGD-{steps} at eps {eps_text(large_eps)}: error {err:.2f}%"
    if status == "pass":
        return Check("large-eps", status, numbers + ": with a ball this large every image can be changed "
                     "into a wrong one, and the attack finds it.", values)
    return Check("large-eps", status, numbers + f", short of {LARGE_EPS_PASS:g}%: an attack that cannot fool "
                 "the model even when allowed to rewrite the image is not following useful gradients.", values)


def check_transfer(white: torch.Tensor, black: torch.Tensor, steps: int, surrogate: str) -> Check:
    gap, se = _paired_gap(white, black)
    status = _gap_status(gap, se)
    values = {"whitebox_error": error_pct(white), "transfer_error": error_pct(black), "gap": gap, "se": se,
              "surrogate": surrogate}
    numbers = (f"white-box PGD-{steps} {values['whitebox_error']:.2f}%, transfer from the surrogate "
               f"{values['transfer_error']:.2f}%")
    if status == "pass":
        return Check("transfer", status, numbers + ": attacking the model itself is stronger than attacking a "
                     "different model blindly, as it is when its gradients are informative.", values)
    return Check("transfer", status, numbers + f": a black-box attack beats white-box by {gap:.2f} points, so the "
                 "model's own gradients point the attack the wrong way (masking).", values)


def check_margin_loss(ce: torch.Tensor, dlr: torch.Tensor, steps: int) -> Check:
    gap, se = _paired_gap(ce, dlr)
    status = _gap_status(gap, se)
    values = {"ce_error": error_pct(ce), "dlr_error": error_pct(dlr), "gap": gap, "se": se}
    numbers = f"PGD-{steps} on cross-entropy {values['ce_error']:.2f}%, on the DLR loss {values['dlr_error']:.2f}%"
    if status == "pass":
        return Check("margin-loss", status, numbers + ": a loss that cannot saturate finds no more than "
                     "cross-entropy, so cross-entropy's gradient is not vanishing.", values)
    return Check("margin-loss", status, numbers + f": the non-saturating loss is stronger by {gap:.2f} points, so "
                 "cross-entropy saturates on this model and hides how weak it is.", values)


def check_autoattack(pgd: torch.Tensor, aa: torch.Tensor, steps: int) -> Check:
    gap, se = _paired_gap(pgd, aa)
    status = _gap_status(gap, se, AUTOATTACK_WARN_GAP, AUTOATTACK_FAIL_GAP)
    values = {f"pgd{steps}_error": error_pct(pgd), "autoattack_error": error_pct(aa), "gap": gap, "se": se}
    numbers = f"PGD-{steps} {error_pct(pgd):.2f}%, AutoAttack {error_pct(aa):.2f}%"
    if status == "pass":
        return Check("autoattack", status, numbers + ": the strongest standard evaluation agrees with PGD.", values)
    return Check("autoattack", status, numbers + f": AutoAttack is stronger by {gap:.2f} points, so PGD "
                 "overstates the robustness; report AutoAttack's number.", values)


# --------------------------------------------------------------------------------------------- audit


def _check_options(eps: float, steps: int, steps_list, large_eps: float | None, autoattack: bool) -> float:
    """UsageError for a bad option; returns the large eps to use."""
    if not 0 < eps <= 1:
        raise UsageError(f"eps {eps:g} must be in (0, 1] for an audit")
    if steps < 1 or not steps_list or any(k < 1 for k in steps_list):
        raise UsageError(f"steps {steps} and steps list {list(steps_list)} must be at least 1")
    large_eps = default_large_eps(eps) if large_eps is None else large_eps
    if not eps < large_eps <= 1:
        raise UsageError(f"large eps {large_eps:g} must be in ({eps:g}, 1]: larger than the audited eps")
    if autoattack:
        from iat.attacks.autoattack import require_autoattack

        require_autoattack()
    return large_eps


def audit_model(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    surrogate: nn.Module | None = None,
    step_size: float | None = None,
    steps: int = 20,
    steps_list: tuple[int, ...] = DEFAULT_STEPS_LIST,
    large_eps: float | None = None,
    autoattack: bool = False,
    batch_size: int = 500,
    seed: int = 0,
    progress: bool = False,
    surrogate_name: str = "surrogate",
) -> dict:
    """Run every check on `model` (images in [0,1] -> logits) over (x, y); audit.json's content.

    eps: the threat model's radius; step_size: PGD step (default eps/4); steps: the PGD step count
    reported elsewhere (e.g. 20); steps_list: step counts of the convergence check; large_eps: the
    radius at which error must reach ~100% (default 8 x eps, at least 0.25); surrogate: a separately
    trained model for the transfer check (skipped without one); autoattack: add the AutoAttack check.
    Usage: `audit_model(model, x, y, eps=8/255, surrogate=other_model)["verdict"]`.
    """
    large_eps = _check_options(eps, steps, steps_list, large_eps, autoattack)
    step = default_step(eps) if step_size is None else step_size
    ks = sorted(set(steps_list) | {steps})
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    checks: list[Check] = []
    with attack_mode(model):
        checks.append(check_deterministic(model, x[:batch_size], y[:batch_size]))
        checks.append(check_logits(model, x[:batch_size]))
        clean = predict(model, x, batch_size) == y
        attacked = clean.nonzero().flatten()
        checks.append(check_gradients(model, x[attacked], y[attacked], eps, batch_size))

        def pgd(**kw):
            kw = {"correct": clean, "batch_size": batch_size, "seed": seed, "progress": progress, **kw}
            return survivors(model, x, y, **kw)

        fgsm = pgd(eps=eps, step_size=eps, steps=1, random_start=False, desc="fgsm")[-1]
        best_rows = pgd(eps=eps, step_size=step, steps=ks[-1], record=ks, desc="pgd (worst case)")
        plain_rows = pgd(eps=eps, step_size=step, steps=ks[-1], record=ks, early_stop=False, desc="pgd (plain)")
        best, plain = dict(zip(ks, best_rows)), dict(zip(ks, plain_rows))
        white = best[steps]
        checks.append(check_single_vs_iterative(fgsm, white, steps))
        checks.append(check_steps(plain, best, steps))
        large_steps = max(steps, 20)
        large = pgd(eps=large_eps, step_size=default_step(large_eps), steps=large_steps, desc="large eps")[-1]
        checks.append(check_large_eps(large, large_eps, large_steps))
        if surrogate is not None:
            black = transfer_correct(surrogate.to(device), [model], x, y, [clean], eps, step, steps, batch_size,
                                     seed, progress)[0]
            checks.append(check_transfer(white, black, steps, surrogate_name))
        n_classes = model(x[:1]).shape[1]
        loss_fn = dlr_loss if n_classes >= 3 else margin_loss
        dlr = pgd(eps=eps, step_size=step, steps=steps, loss_fn=loss_fn, desc="pgd (dlr)")[-1]
        checks.append(check_margin_loss(white, dlr, steps))
        if autoattack:
            from iat.evaluate import correct_under

            aa = correct_under(model, x, y, "autoattack", eps, step, clean, batch_size, seed, progress)
            checks.append(check_autoattack(white, white & aa, steps))
    statuses = {c.status for c in checks}
    verdict = "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"
    return {"verdict": verdict, "n_examples": len(x), "clean_error": error_pct(clean), "eps": eps,
            "step_size": step, "step_size_rule": STEP_RULE if step_size is None else "fixed", "steps": steps,
            "large_eps": large_eps, "seed": seed, "checks": [asdict(c) for c in checks]}


def train_surrogate(dataset: str, data_dir: str | None = None, device: str = "auto", seed: int = 1,
                    progress: bool = False) -> nn.Module:
    """A quickly trained, separate model for the transfer check (see SURROGATE); nothing is kept on disk."""
    from iat.config import TrainConfig
    from iat.evaluate import load_run_model
    from iat.train import resolve_device, train

    cfg = TrainConfig(dataset=dataset, data_dir=data_dir, device=device, seed=seed, **SURROGATE)
    with tempfile.TemporaryDirectory(prefix="iat-surrogate-") as tmp:
        log.info("training a surrogate model for the transfer check: %s", SURROGATE)
        train(cfg, Path(tmp) / "surrogate", progress=progress)
        return load_run_model(Path(tmp) / "surrogate", resolve_device(device))


def audit(
    run_dir: str | Path,
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

    eps: default the run's training eps; surrogate: a run directory for the transfer check
    (default: train a small ERM CNN for a minute, see SURROGATE). Writes nothing; see write_audit.
    Usage: `audit("runs/pgd")["verdict"]`.
    """
    from iat.robustness.runs import load_runs

    dirs = [run_dir] + ([surrogate] if surrogate is not None else [])
    runs = load_runs(dirs, limit, device, data_dir)
    cfg = runs.configs[0]
    if eps is None and cfg.eps == 0:
        raise UsageError(f"{run_dir} was trained at eps 0; give --eps")
    eps = cfg.eps if eps is None else eps
    _check_options(eps, steps, steps_list, large_eps, autoattack)
    if surrogate is not None:
        surrogate_model, surrogate_name = runs.models[1], os.fspath(surrogate)
    else:
        surrogate_model = train_surrogate(cfg.dataset, data_dir or cfg.data_dir, device, cfg.seed + 1, progress)
        surrogate_name = f"trained for this audit: {SURROGATE}"
    report = audit_model(runs.models[0], runs.x, runs.y, eps, surrogate_model, step_size, steps, steps_list,
                         large_eps, autoattack, batch_size, cfg.seed, progress, surrogate_name)
    return {"run": os.fspath(run_dir), "dataset": cfg.dataset, "split": "test", **report}


def audit_table(result: dict) -> str:
    """The checks as a markdown table: check, status, what was measured and what it means."""
    rows = [[c["name"], c["status"].upper() if c["status"] != "pass" else "pass", c["detail"]]
            for c in result["checks"]]
    return format_table(["check", "status", "finding"], rows) + f"\n\nverdict: {result['verdict']}"


def write_audit(result: dict, out: str | Path) -> Path:
    out = runio.make_dir(out)
    runio.write_json(out / AUDIT_JSON, result)
    return out / AUDIT_JSON
