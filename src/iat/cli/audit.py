"""`iat audit`: automatic checks that a run's robustness is real and not gradient masking."""

from __future__ import annotations

from iat.cli import options as opt


def add_parser(sub) -> None:
    from iat.robustness.masking import DEFAULT_LIMIT, DEFAULT_STEPS_LIST, SURROGATE

    p = sub.add_parser(
        "audit",
        help="gradient-masking checks (Athalye et al., AutoAttack's flags): pass, warn or fail",
        description="Runs the checks for the known ways an evaluation can be fooled by gradient masking: the "
        "model is deterministic and outputs logits; input gradients are not zero or vanishing; PGD beats FGSM; "
        "PGD's error does not fall as steps grow; error reaches about 100% at a large eps; white-box beats "
        "transfer from a separate surrogate model; the DLR loss, which cannot saturate, is not much stronger "
        "than cross-entropy; optionally AutoAttack is not much stronger than PGD. Each check prints pass, warn "
        "or fail with its numbers; the verdict is fail if any check fails. Writes audit.json into --out. "
        "The exit code is 0 whatever the verdict; read the verdict from audit.json.",
        epilog=f"Without --surrogate, a small ERM CNN is trained for the transfer check ({SURROGATE['epochs']} "
        f"epochs on up to {SURROGATE['train_size']} training images; about a minute on a CPU). "
        "Example: iat audit runs/pgd --surrogate runs/erm --limit 1000",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `iat train`, or rb:NAME (a "
                   "RobustBench model; --model-dir)")
    opt.add_zoo_options(p)
    p.add_argument("--eps", type=opt.EPS, default=None, help="attack radius (default: the run's training eps)")
    p.add_argument("--step-size", type=opt.STEP, default=None,
                   help="PGD step size (default: eps/4, i.e. 2/255 at 8/255, the paper's ratio)")
    p.add_argument("--steps", type=opt.POS_INT, default=20, help="the PGD step count being vouched for (default 20)")
    p.add_argument("--steps-list", type=opt.STEPS_LIST, default=list(DEFAULT_STEPS_LIST),
                   help=f"step counts of the convergence check (default {','.join(map(str, DEFAULT_STEPS_LIST))})")
    p.add_argument("--large-eps", type=opt.EPS, default=None,
                   help="radius at which error must reach ~100%% (default 8 x eps, at least 64/255, at most 1)")
    p.add_argument("--surrogate", default=None, metavar="RUN_DIR",
                   help="a separately trained run of the same data set for the transfer check (default: train one)")
    p.add_argument("--autoattack", action="store_true",
                   help="also compare AutoAttack with PGD (needs the extra: pip install 'iat[autoattack]')")
    p.add_argument("--limit", type=opt.POS_INT, default=DEFAULT_LIMIT,
                   help=f"audit the first N test examples (default {DEFAULT_LIMIT})")
    p.add_argument("--batch-size", type=opt.POS_INT, default=500, help="examples per attack batch")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--data-dir", default=None, help="where the data set lives (default: the run's)")
    p.add_argument("--out", default=None, help="directory for audit.json (default: RUN_DIR)")
    p.set_defaults(run=run)


def run(args) -> int:
    from iat.robustness import audit, audit_table, write_audit
    from iat.rundir import outdir
    from iat.units import format_eps

    outdir.check_out_dir(args.out or args.run_dir)
    result = audit(args.run_dir, eps=args.eps, step_size=args.step_size, steps=args.steps,
                   steps_list=tuple(args.steps_list), large_eps=args.large_eps, surrogate=args.surrogate,
                   autoattack=args.autoattack, limit=args.limit, device=args.device, data_dir=args.data_dir,
                   batch_size=args.batch_size, progress=not args.quiet)
    print(f"{args.run_dir}: {result['dataset']} test, {result['n_examples']} examples, clean error "
          f"{result['clean_error']:.2f}%, eps {format_eps(result['eps'])}, step {format_eps(result['step_size'])}")
    print(audit_table(result))
    path = write_audit(result, args.out or args.run_dir)
    print(f"wrote {path}")
    return 0
