"""`iat eval`: white-box error of a trained run under clean, FGSM, PGD-N and AutoAttack."""

from __future__ import annotations

from iat.attacks.budget import MAX_RESTARTS
from iat.cli import options as opt
from iat.units import format_eps


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a run: error (%%) under clean, fgsm, pgdN, autoattack",
        description="White-box evaluation on the test split, in eval mode. An example counts as an error if it is "
        "misclassified clean or at any point the attack visits (any PGD step, any restart). `autoattack` is "
        "standard L-inf AutoAttack (APGD-CE, APGD-T, FAB-T, Square) by its authors' package, the optional extra: "
        "pip install 'iat[autoattack]'. Writes eval.json into the run directory (or --out DIR): its `results` are "
        "this call's, "
        "and its `history` keeps one entry per attack and settings (eps, step size, restarts, number of examples) "
        "ever measured, so a later call replaces only what it measures again with the same settings (a quick "
        "--limit 30 check never wipes a full evaluation).",
        epilog="Example: iat eval runs/pgd --attacks clean,fgsm,pgd7,pgd20 --eps 8/255 --step-size 2/255",
    )
    p.add_argument("run_dir", help="a run directory written by `iat train`, or rb:NAME (a RobustBench model, with "
                   "--out DIR; --model-dir)")
    opt.add_zoo_options(p)
    p.add_argument("--attacks", default="clean,fgsm,pgd7,pgd20",
                   help="comma-separated: clean, fgsm, pgdN (N steps, e.g. pgd1000), autoattack "
                   "(default: clean,fgsm,pgd7,pgd20)")
    p.add_argument("--eps", type=opt.EPS, default=None, help="attack radius (default: the run's training eps)")
    p.add_argument("--step-size", type=opt.STEP, default=None,
                   help="PGD step (default: the run's training step; with --eps, eps/4)")
    p.add_argument("--limit", type=opt.POS_INT, default=None, help="evaluate the first N test examples only")
    p.add_argument("--restarts", type=opt.int_range(1, MAX_RESTARTS), default=1,
                   help="PGD random restarts; each attacks only the examples the previous ones did not fool "
                   "(default: 1)")
    p.add_argument("--batch-size", type=opt.POS_INT, default=500, help="examples per attack batch (default: 500)")
    p.add_argument("--weights", choices=("auto", "ema", "last"), default="auto",
                   help="which weights: last (model.safetensors), ema (model_ema.safetensors, a run trained with "
                   "--ema), auto: both when the run has averaged weights, the averaged ones' as eval.json's `results` "
                   "(default: auto)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--data-dir", default=None, help="where the data set lives (default: the run's)")
    p.add_argument("--protocol", choices=("iat", "robustbench"), default="iat",
                   help="iat: the attacks of --attacks; robustbench: RobustBench's own evaluation (standard "
                   "AutoAttack, L-inf, the run's eps, all 10,000 test images; pip install 'iat[robustbench]'), for "
                   "cifar10 and cifar100 runs: its accuracies go into eval.json, and a claim JSON in RobustBench's "
                   "model_info layout into RUN/robustbench/ (default: iat)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write eval.json into DIR instead of the run directory (for a run you cannot write to); "
                   "DIR is created if absent, its eval.json records the run's absolute path under `run` and keeps "
                   "its history; DIR is locked, the run directory is not (it may be read-only)")
    p.set_defaults(run=run)


def parse_attack_list(text: str) -> list[str]:
    from iat.attacks import parse_attack_name
    from iat.errors import UsageError
    from iat.evaluate import check_attacks

    names = []
    for item in text.split(","):
        if item.strip():
            kind, steps = parse_attack_name(item)
            name = f"pgd{steps}" if kind == "pgd" else kind  # pgd007 is pgd7: one key in eval.json
            if name not in names:
                names.append(name)
    if not names:
        raise UsageError(f"--attacks {text!r} is empty; give e.g. clean,fgsm,pgd7,pgd20")
    check_attacks(names)
    return names


def run(args) -> int:
    import sys

    from iat.distributed import speaks
    from iat.evaluate import evaluate_run
    from iat.rundir.evals import EvalNotSaved

    if args.protocol == "robustbench":
        return run_robustbench(args)
    attacks = parse_attack_list(args.attacks)
    from iat.zoo import is_zoo

    if is_zoo(args.run_dir):
        return run_zoo(args, attacks)
    try:
        report = evaluate_run(args.run_dir, attacks, eps=args.eps, step_size=args.step_size, restarts=args.restarts,
                              limit=args.limit, device=args.device, data_dir=args.data_dir,
                              batch_size=args.batch_size, progress=not args.quiet, out=args.out,
                              weights=args.weights)
    except EvalNotSaved as e:  # the work is done: show it, then say it is not saved (exit 1: a fault)
        if speaks():
            print_report(args.run_dir, e.report)
            sys.stdout.flush()
            sys.stderr.write(f"iat eval: error: {e}\n")
        return 1
    if not speaks():  # under torchrun: rank 0 prints the table
        return 0
    if args.out is None:  # the run's own trackers (iat.tracking), if it was trained with --log
        from iat.tracking import log_eval

        log_eval(args.run_dir, report)
    print_report(args.run_dir, report)
    return 0


def run_robustbench(args) -> int:
    from iat.errors import UsageError
    from iat.rbeval import benchmark_run, check_protocol
    from iat.rundir.read import load_run_config

    check_protocol(load_run_config(args.run_dir).dataset, args.limit)
    if args.out is not None:
        raise UsageError("--protocol robustbench writes into the run directory (eval.json and robustbench/); "
                         "drop --out")
    claim = benchmark_run(args.run_dir, data_dir=args.data_dir, device=args.device, batch_size=args.batch_size)
    print(f"{args.run_dir}: RobustBench, {claim['dataset']} {claim['eps']}: clean {claim['clean_acc']}%, "
          f"AutoAttack {claim['autoattack_acc']}%; claim: {claim['path']}")
    return 0


def run_zoo(args, attacks: list[str]) -> int:
    """`iat eval rb:NAME --out DIR`: a RobustBench model under the same attacks as a run, eval.json into DIR."""
    import json
    from pathlib import Path

    from iat.attacks import AttackBudget, default_step
    from iat.errors import UsageError
    from iat.evaluate import evaluate
    from iat.rundir.evals import save_eval
    from iat.rundir.read import load_runs

    out = Path(args.out)
    try:
        earlier = json.loads((out / "eval.json").read_text()).get("run")
    except (OSError, ValueError, AttributeError):
        earlier = None
    if (out / "config.json").exists() or earlier not in (None, args.run_dir):
        raise UsageError(f"--out {out} holds another model's results; choose a directory of its own for "
                         f"{args.run_dir}'s evaluation")
    if args.weights == "ema":
        raise UsageError(f"{args.run_dir} has one set of weights, RobustBench's: drop --weights ema")
    runs = load_runs([args.run_dir], args.limit, args.device, data_dir=args.data_dir)
    cfg = runs.configs[0]
    eps = cfg.eps if args.eps is None else args.eps
    step = args.step_size or (cfg.step_size if args.eps is None else default_step(eps))
    budget = AttackBudget(eps, step, restarts=args.restarts)
    results = evaluate(runs.models[0], runs.x, runs.y, attacks, budget=budget, batch_size=args.batch_size,
                       seed=cfg.seed, progress=not args.quiet)
    report = {"dataset": runs.dataset, "split": "test", "n_examples": len(runs.x), "eps": eps, "step_size": step,
              "restarts": args.restarts, "weights": "last", "results": results, "run": args.run_dir,
              "precision": {"autocast": "fp32", "tf32": False}}
    save_eval(Path(out), report)
    print_report(args.run_dir, report)
    return 0


def print_report(run_dir: str, report: dict) -> None:
    from iat.report import format_table

    print(f"{run_dir}: {report['dataset']} test, {report['n_examples']} examples, "
          f"eps {format_eps(report['eps'])}, step {format_eps(report['step_size'])}")
    by_weights = report.get("results_by_weights", {report.get("weights", "last"): report["results"]})
    rows = [[name, *(f"{by_weights[w][name]['error']:.2f}" for w in by_weights)] for name in report["results"]]
    print(format_table(["attack", *(f"error % ({w} weights)" for w in by_weights)], rows))
