"""Error against eps (the paper's Table 6) and against PGD steps (Table 7), for one or more runs.

Both are white-box L-inf PGD on the test split, worst case per example (iat.attacks.worstcase):
- eps sweep: an adversarial example found inside a smaller ball also lies inside every larger one,
  so the error at eps counts every example fooled at eps or at any smaller eps of the list, and
  each eps attacks only the survivors of the smaller ones. Error never falls as eps grows.
- steps sweep: one seeded PGD run of the largest step count; the error at N steps counts the
  examples misclassified at any of its first N steps, which is exactly PGD-N with the same seed.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

from iat.analysis.figures import pyplot, readable
from iat.attacks import STEP_RULE, AttackBudget
from iat.attacks.worstcase import error_pct, predict, survivors
from iat.errors import UsageError
from iat.fp32 import fp32_evaluation
from iat.report import format_table
from iat.robustness.common import budgets_at, common_eps, run_labels, short_eps
from iat.rundir import files, outdir
from iat.rundir.read import load_runs

log = logging.getLogger(__name__)

SWEEP_EPS_JSON, SWEEP_EPS_PNG = "sweep-eps.json", "sweep-eps.png"
SWEEP_STEPS_JSON, SWEEP_STEPS_PNG = "sweep-steps.json", "sweep-steps.png"


def _step_info(step_size: float | None) -> dict:
    if step_size is None:
        return {"step_size": None, "step_size_rule": STEP_RULE}
    return {"step_size": step_size, "step_size_rule": "fixed"}


@fp32_evaluation()
def sweep_eps(run_dirs: list[str | Path], eps_list: list[float], steps: int = 20, *,
              step_size: float | None = None, limit: int | None = None, device: str = "auto",
              data_dir: str | None = None, batch_size: int = 500, progress: bool = False) -> dict:
    """sweep-eps.json's content: PGD-`steps` error (%) of each run at each eps (ascending).

    step_size None: eps/4 at each eps. Each run is seeded with its training seed.
    Usage: `sweep_eps(["runs/pgd", "runs/iat"], [1/255, 2/255, 10/255])`.
    """
    budgets = budgets_at(eps_list, steps, step_size)
    runs = load_runs(run_dirs, limit, device, data_dir=data_dir)
    points = []
    for name, cfg, model in zip(runs.names, runs.configs, runs.models):
        correct = predict(model, runs.x, batch_size) == runs.y
        for budget in budgets:
            eps = budget.eps
            correct = survivors(model, runs.x, runs.y, budget, correct=correct, batch_size=batch_size,
                                seed=cfg.seed, progress=progress, desc=f"eps {short_eps(eps)}")[-1]
            points.append({"run": name, "eps": eps, "error": error_pct(correct)})
            log.info("%s eps %s: error %.2f%%", name, short_eps(eps), points[-1]["error"])
    return {"steps": steps, **_step_info(step_size), "dataset": runs.dataset, "split": "test",
            "n_examples": len(runs.x), "counting": "an example is an error if misclassified clean or under "
            "PGD at this eps or any smaller eps of the list", "points": points}


@fp32_evaluation()
def sweep_steps(run_dirs: list[str | Path], steps_list: list[int], *, eps: float | None = None,
                step_size: float | None = None, limit: int | None = None, device: str = "auto",
                data_dir: str | None = None, batch_size: int = 500, progress: bool = False) -> dict:
    """sweep-steps.json's content: PGD error (%) of each run after each number of steps (ascending).

    eps None: the runs' common training eps. step_size None: eps/4.
    Usage: `sweep_steps(["runs/pgd"], [5, 10, 20, 50, 100, 1000], eps=5/255)`.
    """
    steps_sorted = sorted(set(steps_list))
    if not steps_sorted or steps_sorted[0] < 1:
        raise UsageError(f"steps list {steps_list} must be non-empty integers >= 1")
    if eps is not None and eps <= 0:
        raise UsageError(f"--eps {eps} must be in (0, 1] for a steps sweep")
    runs = load_runs(run_dirs, limit, device, data_dir=data_dir)
    eps = common_eps(runs) if eps is None else eps
    if eps <= 0:
        raise UsageError("the runs' training eps is 0; give --eps")
    budget = AttackBudget.at(eps, step_size, steps_sorted[-1])
    points = []
    for name, cfg, model in zip(runs.names, runs.configs, runs.models):
        correct = survivors(model, runs.x, runs.y, budget, record=steps_sorted, batch_size=batch_size, seed=cfg.seed,
                            progress=progress, desc=f"{name} steps")
        for k, row in zip(steps_sorted, correct):
            points.append({"run": name, "steps": k, "error": error_pct(row)})
        curve = ", ".join(f"{p['steps']} steps {p['error']:.2f}%" for p in points[-len(steps_sorted) :])
        log.info("%s: %s", name, curve)
    return {"eps": eps, **_step_info(step_size), "step_size_used": budget.step_size, "dataset": runs.dataset,
            "split": "test", "n_examples": len(runs.x), "counting": "an example is an error if misclassified clean "
            "or at any of the first N steps of one seeded PGD run", "points": points}


# -------------------------------------------------------------------------------------------- report


def _axis(result: dict) -> str:
    points = result.get("points") or [{}]
    if "eps" in points[0]:
        return "eps"
    if "steps" in points[0]:
        return "steps"
    raise ValueError("not a sweep result: its points have neither 'eps' nor 'steps'")


def _grid(result: dict, axis: str) -> tuple[list[str], list, dict]:
    runs, values, cell = [], [], {}
    for p in result["points"]:
        if p["run"] not in runs:
            runs.append(p["run"])
        if p[axis] not in values:
            values.append(p[axis])
        cell[p["run"], p[axis]] = p["error"]
    return runs, sorted(values), cell


def sweep_table(result: dict) -> str:
    """The paper's layout as markdown: rows runs, columns eps (Table 6) or steps (Table 7); error %."""
    axis = _axis(result)
    runs, values, cell = _grid(result, axis)
    labels = run_labels(runs)
    if axis == "eps":
        corner = f"Model \\ Attack ε (PGD-{result['steps']})"
        header = [short_eps(v) for v in values]
    else:
        corner = f"Model \\ Num. iterations (ε = {short_eps(result['eps'])})"
        header = [str(v) for v in values]
    rows = [[labels[r]] + [f"{cell[r, v]:.2f}" if (r, v) in cell else "-" for v in values] for r in runs]
    return format_table([corner] + header, rows)


def sweep_plot(result: dict) -> bytes:
    """A PNG of error (%) against eps or steps, one line per run."""
    plt = pyplot()
    axis = _axis(result)
    runs, values, cell = _grid(result, axis)
    labels = run_labels(runs)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    try:
        for r in runs:
            xs = [v for v in values if (r, v) in cell]
            ax.plot(xs, [cell[r, v] for v in xs], marker="o", label=readable(labels[r]))
        if axis == "eps":
            ax.set_xlabel("eps (L-inf, images in [0,1])")
            ax.set_title(f"Error against eps, PGD-{result['steps']}")
        else:
            if len(values) > 1 and values[-1] / values[0] >= 20:
                ax.set_xscale("log")
            ax.set_xlabel("PGD steps")
            ax.set_title(f"Error against PGD steps, eps = {short_eps(result['eps'])}")
        ax.set_ylabel("error (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return buf.getvalue()


def write_sweep(result: dict, out: str | Path) -> list[Path]:
    """Write sweep-eps/steps .json and .png into `out` (created if missing); return the paths."""
    axis = _axis(result)
    out = outdir.make_dir(out)
    json_name, png_name = (SWEEP_EPS_JSON, SWEEP_EPS_PNG) if axis == "eps" else (SWEEP_STEPS_JSON, SWEEP_STEPS_PNG)
    files.write_json(out / json_name, result)
    files.atomic_write_bytes(out / png_name, sweep_plot(result))
    return [out / json_name, out / png_name]
