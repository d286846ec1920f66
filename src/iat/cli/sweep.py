"""`iat sweep eps|steps`: error against the attack radius (Table 6) or the PGD step count (Table 7)."""

from __future__ import annotations

import argparse

from iat.cli import options as opt

STEP_HELP = "PGD step size (default: eps/4 at each eps, i.e. 2/255 at 8/255, the paper's ratio)"


def _common(p) -> None:
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories written by `iat train`")
    p.add_argument("--step-size", type=opt.STEP, default=None, help=STEP_HELP)
    p.add_argument("--limit", type=opt.POS_INT, default=None, help="evaluate the first N test examples only")
    p.add_argument("--batch-size", type=opt.POS_INT, default=500, help="examples per attack batch")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--data-dir", default=None, help="where the data set lives (default: the runs')")
    p.add_argument("--out", default=None, help="directory for the JSON and PNG (default: the first RUN_DIR)")
    opt.add_zoo_options(p)
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress bars or log lines")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="error against eps (Table 6) or PGD steps (Table 7) for one or more runs",
        description="White-box L-inf PGD on the test split, worst case per example. `iat sweep eps` varies the "
        "radius at a fixed step count; `iat sweep steps` varies the step count at a fixed radius.",
    )
    kinds = p.add_subparsers(dest="kind", metavar="KIND", parser_class=type(p), required=True)
    e = kinds.add_parser(
        "eps",
        help="error against eps at a fixed number of PGD steps (Table 6)",
        description="PGD error of each run at each eps. An example fooled inside a smaller ball is also fooled "
        "inside every larger one, so each eps counts the examples fooled at it or at any smaller eps of the "
        "list, and error never falls as eps grows; eps 0 is the clean error. Prints the table (rows: runs; "
        "columns: eps) and writes sweep-eps.json and sweep-eps.png into --out.",
        epilog="Example: iat sweep eps runs/pgd runs/iat-mixup --eps 1/255,2/255,10/255,15/255,20/255,25/255,50/255",
    )
    e.add_argument("--eps", type=opt.EPS_LIST, required=True, help="comma-separated radii: 1/255,2/255,10/255")
    e.add_argument("--steps", type=opt.POS_INT, default=20, help="PGD steps at every eps (paper: 20)")
    _common(e)
    e.set_defaults(run=run_eps)
    s = kinds.add_parser(
        "steps",
        help="error against the number of PGD steps at a fixed eps (Table 7)",
        description="PGD error of each run after each number of steps, from one seeded run of the largest count "
        "(its first N steps are PGD-N; an example misclassified at any of them is an error). Prints the table "
        "(rows: runs; columns: steps) and writes sweep-steps.json and sweep-steps.png into --out.",
        epilog="Example: iat sweep steps runs/pgd runs/iat-mixup --steps 5,10,20,50,100,1000 --eps 5/255",
    )
    s.add_argument("--steps", type=opt.STEPS_LIST, required=True, help="comma-separated step counts: 5,10,20")
    s.add_argument("--eps", type=opt.EPS, default=None, help="attack radius (default: the runs' training eps)")
    _common(s)
    s.set_defaults(run=run_steps)


def _finish(result: dict, args) -> int:
    from iat.robustness import sweep_table, write_sweep

    print(sweep_table(result))
    paths = write_sweep(result, args.out or args.run_dirs[0])
    print(f"\n{result['dataset']} test, {result['n_examples']} examples; wrote {', '.join(map(str, paths))}")
    return 0


def run_eps(args) -> int:
    from iat.robustness import sweep_eps
    from iat.rundir import outdir

    outdir.check_out_dir(args.out or args.run_dirs[0])
    result = sweep_eps(args.run_dirs, args.eps, args.steps, step_size=args.step_size, limit=args.limit,
                       device=args.device, data_dir=args.data_dir, batch_size=args.batch_size, progress=not args.quiet)
    return _finish(result, args)


def run_steps(args) -> int:
    from iat.robustness import sweep_steps
    from iat.rundir import outdir

    outdir.check_out_dir(args.out or args.run_dirs[0])
    result = sweep_steps(args.run_dirs, args.steps, eps=args.eps, step_size=args.step_size, limit=args.limit,
                         device=args.device, data_dir=args.data_dir, batch_size=args.batch_size,
                         progress=not args.quiet)
    return _finish(result, args)

