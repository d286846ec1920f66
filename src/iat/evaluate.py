"""White-box evaluation: error (%) under clean, FGSM, PGD-N and AutoAttack on a test split, in eval mode.

An example counts as robust only if it is classified correctly clean and at every point the attack
visits, in every restart (the worst case; see iat.attacks.worstcase), so attacks spend work only on
examples still classified correctly, and drop each one the moment it is misclassified.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from iat import runio
from iat.attacks import make_attack, parse_attack_name, require_autoattack
from iat.attacks.worstcase import error_pct, predict, survivors
from iat.config import TrainConfig
from iat.errors import UsageError
from iat.models import MixableNet

log = logging.getLogger(__name__)


def load_run_config(run_dir: str | Path) -> TrainConfig:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"run directory {run_dir} does not exist")
    raw = runio.read_json(run_dir / runio.CONFIG)
    if not isinstance(raw, dict) or "arch" not in raw or "dataset" not in raw:
        raise UsageError(f"{run_dir / runio.CONFIG} is not an iat run configuration (no arch/dataset)")
    try:
        return TrainConfig.from_dict(raw).validate()
    except TypeError as e:
        raise UsageError(f"{run_dir / runio.CONFIG} has malformed values ({e})") from None


def load_run_model(run_dir: str | Path, device: str | torch.device = "cpu") -> MixableNet:
    """The trained model of a run directory, in eval mode."""
    from iat.train import build_model

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    model = build_model(cfg)
    state = runio.load_weights(run_dir / runio.WEIGHTS)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        detail = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise UsageError(f"{run_dir / runio.WEIGHTS} does not match the architecture {cfg.arch!r} of its "
                         f"config.json ({detail[:150]})") from None
    return model.to(device).eval()


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: list[str],
    eps: float,
    step_size: float,
    batch_size: int = 500,
    seed: int = 0,
    progress: bool = False,
    restarts: int = 1,
) -> dict[str, dict[str, float]]:
    """{attack name: {"error": %}} for each attack name ('clean', 'fgsm', 'pgdN', 'autoattack').

    Every attack is seeded with `seed` before it runs, so the same call gives the same numbers.
    PGD runs `restarts` times from random starts; each restart attacks only the examples that
    survived the ones before. Parameters get no gradient and the model's mode is restored.
    """
    check_attacks(attacks)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        x, y = x.to(device), y.to(device)
        correct_clean = predict(model, x, batch_size) == y
        # With one restart, PGD-j is the first j steps of PGD-k under the same seed: one run of the
        # longest gives every shorter one (pgd7 and pgd20 cost 20 steps, not 27).
        pgd_steps = sorted({parse_attack_name(a)[1] for a in attacks if parse_attack_name(a)[0] == "pgd"})
        shared = {}
        if restarts == 1 and len(pgd_steps) > 1:
            masks = survivors(model, x, y, eps, step_size, pgd_steps[-1], correct=correct_clean, record=pgd_steps,
                              batch_size=batch_size, seed=seed, progress=progress, desc=f"pgd{pgd_steps[-1]}")
            shared = {f"pgd{k}": mask for k, mask in zip(pgd_steps, masks)}
        results = {}
        for name in attacks:
            correct = shared.get(name)
            if correct is None:
                correct = correct_under(model, x, y, name, eps, step_size, correct_clean, batch_size, seed,
                                        progress, restarts)
            results[name] = {"error": error_pct(correct)}
            log.info("%s: error %.2f%%", name, results[name]["error"])
        return results
    finally:
        model.train(was_training)


def correct_under(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    name: str,
    eps: float,
    step_size: float,
    correct_clean: torch.Tensor,
    batch_size: int = 500,
    seed: int = 0,
    progress: bool = False,
    restarts: int = 1,
) -> torch.Tensor:
    """Bool mask: still classified correctly under the attack `name`; only `correct_clean` are attacked."""
    kind, steps = parse_attack_name(name)
    if kind == "clean":
        return correct_clean.clone()
    if kind in ("fgsm", "pgd"):
        fgsm = kind == "fgsm"
        return survivors(model, x, y, eps, eps if fgsm else step_size, steps, correct=correct_clean,
                         random_start=not fgsm, restarts=1 if fgsm else restarts, batch_size=batch_size,
                         seed=seed, progress=progress, desc=name)[-1]
    attack = make_attack(name, model, eps, step_size, seed=seed)
    correct = correct_clean.clone()
    torch.manual_seed(seed)
    todo = correct_clean.nonzero().flatten()  # misclassified examples stay errors
    for i in tqdm(range(0, len(todo), batch_size), desc=name, disable=None if progress else True, leave=False):
        idx = todo[i : i + batch_size]
        x_adv = attack(x[idx], y[idx])
        with torch.no_grad():
            correct[idx] = model(x_adv).argmax(1) == y[idx]
    return correct


def check_attacks(attacks: list[str]) -> None:
    """Raise UsageError for an unknown name, or for autoattack without its optional extra."""
    for name in attacks:
        if parse_attack_name(name)[0] == "autoattack":
            require_autoattack()


def evaluate_run(
    run_dir: str | Path,
    attacks: list[str],
    eps: float | None = None,
    step_size: float | None = None,
    limit: int | None = None,
    device: str = "auto",
    data_dir: str | None = None,
    batch_size: int = 500,
    progress: bool = False,
    restarts: int = 1,
) -> dict:
    """Evaluate a run on its data set's test split; write and return eval.json's content."""
    from iat.data import load_data
    from iat.train import resolve_device

    check_attacks(attacks)
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    dev = resolve_device(device)
    model = load_run_model(run_dir, dev)
    eps = cfg.eps if eps is None else eps
    step_size = cfg.step_size if step_size is None else step_size
    x, y = load_data(cfg.dataset, "test", data_dir or cfg.data_dir, limit=limit)
    results = evaluate(model, x, y, attacks, eps, step_size, batch_size, seed=cfg.seed, progress=progress,
                       restarts=restarts)
    report = {"dataset": cfg.dataset, "split": "test", "n_examples": len(x), "eps": eps,
              "step_size": step_size, "restarts": restarts, "results": results}
    runio.write_json(run_dir / runio.EVAL, report)
    return report
