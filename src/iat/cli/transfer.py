"""`iat transfer`: adversarial examples crafted on each run, evaluated on every run (Table 5)."""

from __future__ import annotations

from iat.cli import options as opt


def add_parser(sub) -> None:
    p = sub.add_parser(
        "transfer",
        help="transfer attacks between runs, white-box on the diagonal (Table 5)",
        description="For each eps and each source run, PGD crafts adversarial examples on the source alone and "
        "every target run classifies them (black box); source = target is the white-box error. An example the "
        "target misclassifies clean counts as an error. White-box cells should beat the black-box ones in their "
        "column; if not, the target masks its gradients. Prints the table (rows: source; columns: eps x target) "
        "and writes transfer.json into --out.",
        epilog="Example: iat transfer runs/pgd runs/iat-mixup runs/iat-manifold-mixup --eps 2/255,5/255,10/255",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="two or more run directories of one data set")
    p.add_argument("--eps", type=opt.EPS_LIST, required=True, help="comma-separated radii: 2/255,5/255,10/255")
    p.add_argument("--steps", type=opt.POS_INT, default=20, help="PGD steps (default 20)")
    p.add_argument("--step-size", type=opt.STEP, default=None,
                   help="PGD step size (default: eps/4 at each eps, i.e. 2/255 at 8/255, the paper's ratio)")
    p.add_argument("--limit", type=opt.POS_INT, default=None, help="evaluate the first N test examples only")
    p.add_argument("--batch-size", type=opt.POS_INT, default=500, help="examples per attack batch")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--data-dir", default=None, help="where the data set lives (default: the runs')")
    p.add_argument("--out", default=None, help="directory for transfer.json (default: the first RUN_DIR)")
    opt.add_zoo_options(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from iat.errors import UsageError
    from iat.robustness import TRANSFER_JSON, transfer_matrix, transfer_table
    from iat.rundir import files, outdir

    if len(args.run_dirs) < 2:
        raise UsageError(f"give at least two run directories (a source and a target), got {len(args.run_dirs)}")
    out = outdir.check_out_dir(args.out or args.run_dirs[0])
    result = transfer_matrix(args.run_dirs, args.eps, args.steps, step_size=args.step_size, limit=args.limit,
                             device=args.device, data_dir=args.data_dir, batch_size=args.batch_size,
                             progress=not args.quiet)
    print(transfer_table(result))
    outdir.make_dir(out)
    files.write_json(out / TRANSFER_JSON, result)
    print(f"\n{result['dataset']} test, {result['n_examples']} examples, PGD-{result['steps']}; "
          f"wrote {out / TRANSFER_JSON}")
    return 0
