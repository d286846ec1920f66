"""White-box evaluation: error (%) under clean, FGSM, PGD-N and AutoAttack on a test split, in eval mode.

An example counts as robust only if it is classified correctly clean and at every point the attack
visits, in every restart (the worst case; see iat.attacks.worstcase), so attacks spend work only on
examples still classified correctly, and drop each one the moment it is misclassified. Loading run
directories is iat.rundir.read's job; this module only evaluates.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from iat.attacks import AttackBudget, default_step, frozen, make_attack, parse_attack_name, require_autoattack
from iat.attacks.worstcase import error_pct, predict, survivors
from iat.config import resolve_device
from iat.data import load_data
from iat.distributed import SINGLE, World, process_group
from iat.errors import UsageError
from iat.fp32 import fp32_evaluation
from iat.rundir import outdir
from iat.rundir.evals import check_eval_out, save_eval
from iat.rundir.read import WEIGHT_FILES, load_run_config, load_run_model

log = logging.getLogger(__name__)


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: list[str],
    *,
    budget: AttackBudget,
    batch_size: int = 500,
    seed: int = 0,
    progress: bool = False,
    world: World = SINGLE,
) -> dict[str, dict]:
    """{attack name: {"error": %}} for each attack name ('clean', 'fgsm', 'pgdN', 'autoattack').

    budget: eps, PGD step size and restarts (its steps are not used: each name says its own).
    Every attack is seeded with `seed` before it runs, so the same call gives the same numbers.
    PGD runs `budget.restarts` times from random starts; each restart attacks only the examples that
    survived the ones before. Parameters get no gradient and the model's mode is restored. Under
    torchrun (`world`) the ranks share the batches of FGSM, PGD and AutoAttack and merge their masks: the
    same numbers. AutoAttack's entry also holds its batch size, and the examples and seconds of each rank.
    """
    check_attacks(attacks)
    device = next(model.parameters()).device
    with fp32_evaluation(), frozen(model, "eval"):  # never under autocast, TF32 off (see iat.fp32)
        x, y = x.to(device), y.to(device)
        correct_clean = predict(model, x, batch_size) == y
        # With one restart, PGD-j is the first j steps of PGD-k under the same seed: one run of the
        # longest gives every shorter one (pgd7 and pgd20 cost 20 steps, not 27).
        pgd_steps = sorted({parse_attack_name(a)[1] for a in attacks if parse_attack_name(a)[0] == "pgd"})
        shared = {}
        if budget.restarts == 1 and len(pgd_steps) > 1:
            masks = survivors(model, x, y, budget.with_steps(pgd_steps[-1]), correct=correct_clean, record=pgd_steps,
                              batch_size=batch_size, seed=seed, progress=progress, desc=f"pgd{pgd_steps[-1]}",
                              world=world)
            shared = {f"pgd{k}": mask for k, mask in zip(pgd_steps, masks)}
        results = {}
        for name in attacks:
            correct, split = shared.get(name), {}
            if parse_attack_name(name)[0] == "autoattack":  # its entry also says how the ranks split the work
                correct, split = autoattack_correct(model, x, y, budget=budget, correct_clean=correct_clean,
                                                    batch_size=batch_size, seed=seed, progress=progress, world=world)
            elif correct is None:
                correct = correct_under(model, x, y, name, budget=budget, correct_clean=correct_clean,
                                        batch_size=batch_size, seed=seed, progress=progress, world=world)
            results[name] = {"error": error_pct(correct), **split}
            log.info("%s: error %.2f%%", name, results[name]["error"])
    return results


def correct_under(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    name: str,
    *,
    budget: AttackBudget,
    correct_clean: torch.Tensor,
    batch_size: int = 500,
    seed: int = 0,
    progress: bool = False,
    world: World = SINGLE,
) -> torch.Tensor:
    """Bool mask: still classified correctly under the attack `name`; only `correct_clean` are attacked."""
    kind, steps = parse_attack_name(name)
    if kind == "clean":
        return correct_clean.clone()
    if kind == "fgsm":
        return survivors(model, x, y, AttackBudget.fgsm(budget.eps), correct=correct_clean, random_start=False,
                         batch_size=batch_size, seed=seed, progress=progress, desc=name, world=world)[-1]
    if kind == "pgd":
        return survivors(model, x, y, budget.with_steps(steps), correct=correct_clean, batch_size=batch_size,
                         seed=seed, progress=progress, desc=name, world=world)[-1]
    return autoattack_correct(model, x, y, budget=budget, correct_clean=correct_clean, batch_size=batch_size,
                              seed=seed, progress=progress, world=world)[0]


def autoattack_correct(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    budget: AttackBudget,
    correct_clean: torch.Tensor,
    batch_size: int = 500,
    seed: int = 0,
    progress: bool = False,
    world: World = SINGLE,
) -> tuple[torch.Tensor, dict]:
    """AutoAttack's mask (as correct_under) and how the work was split: {"batch_size", "examples_per_rank",
    "seconds_per_rank"}.

    The examples classified correctly clean are cut into batches of `batch_size`, and AutoAttack runs once per
    batch. Each of its components reseeds torch with `seed` at the start of every call, so a batch's result
    depends on that batch and the seed alone, not on the batches before it. Under torchrun each rank attacks
    every size-th batch (the PGD batches' rule) and the masks are merged: the numbers of one process with the
    same batch size, whatever the number of ranks. Another batch size is another (equally valid) draw.
    """
    attack = make_attack("autoattack", model, budget, seed=seed)
    correct = correct_clean.clone()
    torch.manual_seed(seed)
    todo = correct_clean.nonzero().flatten()  # misclassified examples stay errors
    n_batches = -(-len(todo) // batch_size)
    if world.is_main and n_batches < min(world.size, len(todo)):
        log.warning("autoattack: %d batches of up to %d examples for %d processes leave %d idle; a smaller "
                    "--batch-size (e.g. %d) spreads the work", n_batches, batch_size, world.size,
                    world.size - n_batches, -(-len(todo) // world.size))
    attacked, started = 0, time.perf_counter()
    for k in tqdm(range(n_batches), desc="autoattack", disable=None if progress else True, leave=False):
        if not world.owns(k):
            continue
        idx = todo[k * batch_size : (k + 1) * batch_size]
        x_adv = attack(x[idx], y[idx])
        with torch.no_grad():
            correct[idx] = model(x_adv).argmax(1) == y[idx]
        attacked += len(idx)
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    seconds = time.perf_counter() - started  # this rank's own work, before it waits for the others
    correct = world.all_and(correct)  # a rank leaves the batches it did not attack at their clean value
    per_rank = world.all_gather((attacked, round(seconds, 2)))
    return correct, {"batch_size": batch_size, "examples_per_rank": [n for n, _ in per_rank],
                     "seconds_per_rank": [s for _, s in per_rank]}


def check_attacks(attacks: list[str]) -> None:
    """Raise UsageError for an unknown name, or for autoattack without its optional extra."""
    for name in attacks:
        if parse_attack_name(name)[0] == "autoattack":
            require_autoattack()


@fp32_evaluation()
def evaluate_run(
    run_dir: str | Path,
    attacks: list[str],
    *,
    eps: float | None = None,
    step_size: float | None = None,
    restarts: int = 1,
    limit: int | None = None,
    device: str = "auto",
    data_dir: str | None = None,
    batch_size: int = 500,
    progress: bool = False,
    out: str | Path | None = None,
    weights: str = "auto",
) -> dict:
    """Evaluate a run on its data set's test split; write and return eval.json's content.

    eval.json goes into the run directory, or into `out` (created if absent; for a run directory you
    cannot write to), where it also records the evaluated run under `run`.

    eps defaults to the run's training eps and step_size to its training step; with another eps and no
    step_size, the step is eps/4 (the paper's 2/255 at 8/255, as in the sweeps): the training step of
    a smaller eps would leave PGD unable to reach the larger eps-ball's surface.

    weights: 'last' (model.safetensors), 'ema' (model_ema.safetensors, a run trained with --ema) or 'auto': both
    when the run has averaged weights (the top-level `results` are the averaged ones', `results_by_weights` holds
    both, and `history` an entry per weights), else the last.
    """
    if weights not in ("auto", "last", "ema"):
        raise UsageError(f"--weights {weights!r}: choose one of auto, last, ema")
    check_attacks(attacks)
    dev = resolve_device(device)
    with process_group(dev) as world:  # under torchrun: one evaluation, its batches shared by the ranks
        return _evaluate_run(Path(run_dir), attacks, eps=eps, step_size=step_size, restarts=restarts, limit=limit,
                             dev=dev, data_dir=data_dir, batch_size=batch_size,
                             progress=progress and world.is_main, world=world, out=None if out is None else Path(out),
                             weights=weights)


def _evaluate_run(run_dir: Path, attacks: list[str], *, eps: float | None, step_size: float | None, restarts: int,
                  limit: int | None, dev: torch.device, data_dir: str | None, batch_size: int, progress: bool,
                  world: World, out: Path | None, weights: str) -> dict:
    cfg = load_run_config(run_dir)
    if out is not None and out.resolve() == run_dir.resolve():
        out = None  # the run directory itself: the default
    if out is not None:  # rank 0 decides for every rank (they may not share --out's file system)
        world.on_main(lambda: check_eval_out(run_dir, out))
    if weights == "auto":
        weights = "last,ema" if (run_dir / WEIGHT_FILES["ema"]).is_file() else "last"
    if step_size is None:
        step_size = cfg.step_size if eps is None else default_step(eps)
    budget = AttackBudget(cfg.eps if eps is None else eps, step_size, restarts=restarts)
    x, y = load_data(cfg.dataset, "test", data_dir or cfg.data_dir, limit=limit, image_size=cfg.image_size)
    by_weights = {}
    for which in weights.split(","):  # the averaged weights last: theirs are the top-level results
        model = load_run_model(run_dir, dev, weights=which)
        by_weights[which] = evaluate(model, x, y, attacks, budget=budget, batch_size=batch_size, seed=cfg.seed,
                                     progress=progress, world=world)
        report = {"dataset": cfg.dataset, "split": "test", "n_examples": len(x), "eps": budget.eps,
                  "step_size": budget.step_size, "restarts": restarts, "weights": which, "results": by_weights[which],
                  "precision": {"autocast": "fp32", "tf32": False}}  # what ran: see evaluate()
        if len(by_weights) > 1:
            report["results_by_weights"] = dict(by_weights)
        if out is not None:
            report["run"] = str(run_dir.resolve())  # absolute: the check above compares it from any directory
        # merged with earlier results (iat.rundir.evals); EvalNotSaved if it cannot be written
        world.on_main(lambda report=report: save_eval(run_dir if out is None else outdir.make_dir(out), report))
    return report
