"""The gradient-masking checks, one function each: an experiment whose outcome is known for an honest
model, and a verdict (pass, warn or fail) with the numbers and one sentence on what they mean.

iat.robustness.masking runs them on a model (`audit_model`). Comparisons of two attacks allow for
sampling noise: a gap counts only if it exceeds both a fixed number of percentage points and a
multiple of its paired standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from iat.attacks import ce_loss, margin_loss
from iat.attacks.worstcase import error_pct
from iat.robustness.common import short_eps

STATUSES = ("pass", "warn", "fail")

# Thresholds, in percentage points of error unless said otherwise.
WARN_GAP, FAIL_GAP = 2.0, 5.0  # a stronger-than-expected attack: gap to warn at, to fail at
WARN_SE, FAIL_SE = 2.0, 3.0  # ... and the gap must also exceed this many paired standard errors
AUTOATTACK_WARN_GAP, AUTOATTACK_FAIL_GAP = 3.0, 10.0  # AutoAttack is expected to be a little stronger
LARGE_EPS_PASS, LARGE_EPS_WARN = 99.0, 95.0  # error at the large eps: pass at or above, warn at or above
BAD_GRAD_WARN, BAD_GRAD_FAIL = 0.01, 0.10  # fraction of attacked examples with zero/vanishing gradients
VANISHING = 1e-4  # margin gradient "vanishing": eps * ||grad||_1 < VANISHING * |margin|
LOGITS_WARN, LOGITS_FAIL = 1e-5, 1e-3  # relative logit difference between two identical passes


def eps_text(eps: float) -> str:
    """`0.8`, or `8/255 = 0.0314` where the short form is a fraction."""
    short = short_eps(eps)
    return short if short == f"{eps:g}" else f"{short} = {eps:.4f}"


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
    bad = int((~torch.isfinite(out)).any(1).sum())
    if bad:  # min/max of NaN are NaN, and NaN >= 0 is False: without this, [nan, nan] "passes"
        finite = out[torch.isfinite(out)]
        values = {"non_finite_rows": bad, "n": len(x),
                  "min": finite.min().item() if finite.numel() else None,
                  "max": finite.max().item() if finite.numel() else None}
        return Check("logits", "fail", f"the outputs are NaN or infinite on {bad} of {len(x)} images: the weights "
                     "are damaged (scaled past float32's range), and no attack number from this model means "
                     "anything.", values)
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
               f"{values['transfer_error']:.2f}% (both at PGD's final point)")
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
    """`pgd`, `aa`: still correct under each; the gap is what AutoAttack adds to PGD (either one fooling an
    example makes it an error), so AutoAttack alone may even be below PGD with a gap above 0."""
    either = pgd & aa
    gap, se = _paired_gap(pgd, either)
    status = _gap_status(gap, se, AUTOATTACK_WARN_GAP, AUTOATTACK_FAIL_GAP)
    values = {f"pgd{steps}_error": error_pct(pgd), "autoattack_error": error_pct(aa),
              "either_error": error_pct(either), "gap": gap, "se": se}
    numbers = (f"PGD-{steps} {error_pct(pgd):.2f}%, AutoAttack {error_pct(aa):.2f}%, either of them "
               f"{error_pct(either):.2f}%")
    if status == "pass":
        return Check("autoattack", status, numbers + ": the strongest standard evaluation agrees with PGD.", values)
    return Check("autoattack", status, numbers + f": AutoAttack fools {gap:.2f} points of examples PGD did not, "
                 "so PGD overstates the robustness; report the error under both.", values)
