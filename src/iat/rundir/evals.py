"""eval.json: the latest call's results, and every earlier result a later call did not redo.

The documented format is kept: the top level holds the latest call's settings and `results` one
entry per attack it asked for (`results.ATTACK.error`). Beside it, `history` holds one entry per
attack and settings ever measured on this run, the latest one for each: a call replaces only the
entries it measured again with the same settings (eps, step size, restarts, number of examples), so
a quick `iat eval --limit 30` never wipes a full evaluation.

    {..., "results": {"pgd20": {"error": 51.2}},
     "history": [{"attack": "pgd20", "eps": 0.1, "step_size": 0.025, "restarts": 1, "n_examples": 10000,
                  "error": 50.9}, {"attack": "pgd20", ..., "n_examples": 30, "error": 51.2}]}
"""

from __future__ import annotations

import json
from pathlib import Path

from iat.errors import UsageError
from iat.rundir import files

SETTINGS = ("eps", "step_size", "restarts", "n_examples", "weights")  # weights: 'last' or 'ema' (iat eval --weights)


class EvalNotSaved(RuntimeError):
    """The evaluation ran but eval.json could not be written; `report` holds its results."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


def _key(entry: dict) -> tuple:
    # an entry from before --ema existed measured the trained (last) weights
    return (entry.get("attack"), *(entry.get(k) or "last" if k == "weights" else entry.get(k) for k in SETTINGS))


def earlier_history(path: Path) -> list[dict]:
    """The entries of an existing eval.json (an old one without `history` gives its `results`);
    an unreadable or damaged file gives none (it is replaced)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return []
    if not isinstance(old, dict):
        return []
    if isinstance(old.get("history"), list):
        return [e for e in old["history"] if isinstance(e, dict) and "attack" in e]
    results = old.get("results")
    if not isinstance(results, dict):
        return []
    return [{"attack": name, **{k: old.get(k) for k in SETTINGS}, **r}
            for name, r in results.items() if isinstance(r, dict)]


def merged(report: dict, earlier: list[dict]) -> dict:
    """`report` plus `history`: the earlier entries this call did not redo, then this call's."""
    new = [{"attack": name, **{k: report.get(k) for k in SETTINGS}, **r} for name, r in report["results"].items()]
    redone = {_key(e) for e in new}
    return {**report, "history": [e for e in earlier if _key(e) not in redone] + new}


def check_eval_out(run_dir: Path, out: Path) -> None:
    """Refuse an `iat eval --out` directory whose eval.json belongs to another run (its history would mix
    two models' results): another run's directory, or an eval.json written for another run. `out` is not
    `run_dir` itself."""
    if (out / files.CONFIG).exists():
        raise UsageError(f"--out {out} is another run's directory; its {files.EVAL} is that run's: choose a "
                         "directory of its own for this run's evaluation")
    try:
        earlier = json.loads((out / files.EVAL).read_text())
    except (OSError, ValueError, RecursionError):
        return  # none yet, or damaged (replaced)
    if not isinstance(earlier, dict):
        return  # damaged (replaced), as earlier_history treats it
    run = earlier.get("run")
    if not isinstance(run, str):
        raise UsageError(f"--out {out} holds an {files.EVAL} that names no run (one written inside a run directory): "
                         "choose a directory of its own for this run's evaluation")
    if Path(run) != run_dir.resolve():
        raise UsageError(f"--out {out} holds the {files.EVAL} of {run}, not of {run_dir.resolve()}: choose a "
                         "directory of its own for this run's evaluation")


def save_eval(run_dir: Path, report: dict) -> dict:
    """Write `run_dir`/eval.json (merged with the earlier one; `run_dir` is `--out` where given); return
    what was written. A failed write (read-only directory, full disk) raises EvalNotSaved holding the results."""
    path = run_dir / files.EVAL
    content = merged(report, earlier_history(path))
    try:
        files.write_json(path, content)
    except OSError as e:
        raise EvalNotSaved(f"could not write {path} ({e.strerror or e}); the results above are not saved: free "
                           "space or make the directory writable (or write elsewhere with --out DIR), then evaluate "
                           "again", report) from None
    return content
