"""`iat analyze norms|probe RUN_DIR...`: weight norms (Figure 1) and the random-label probe (Section 3)."""

from __future__ import annotations

import argparse
from pathlib import Path

from iat.analysis.probe import ProbeConfig
from iat.cli import options as opt

QUIET_HELP = "no progress bars or log lines"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "analyze",
        help="analyze trained runs: weight norms (Figure 1), random-label probe (Section 3)",
        description="Analyses of trained run directories. `iat analyze norms` computes the Frobenius and spectral norm "
        "of every weight matrix (Section 4.4, Figure 1); `iat analyze probe` measures how well the frozen "
        "penultimate representation fits random labels (Section 3).",
    )
    nested = p.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True, parser_class=type(p))

    n = nested.add_parser(
        "norms",
        help="Frobenius and spectral norm of every weight matrix, per layer (Figure 1)",
        description="For each run, the Frobenius norm and the spectral norm (largest singular value, computed "
        "exactly in float64) of every linear and convolution weight, convolution kernels reshaped to "
        "(out, in*kh*kw), in forward order. Prints a table and writes norms.json and norms.png (Figure 1's "
        "layout: one line per run, layers on the x axis) into --out.",
        epilog="Example: iat analyze norms runs/erm runs/pgd runs/iat-mixup --out analysis/",
    )
    n.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories written by `iat train`")
    n.add_argument("--out", default=None, help="output directory (default: the first RUN_DIR)")
    n.set_defaults(run=run_norms)

    d = ProbeConfig()
    q = nested.add_parser(
        "probe",
        help="how well frozen representations fit random labels (Section 3)",
        description="Freeze each run's network, take its penultimate representation of the first N training "
        "images, and fit fixed random binary labels with a 2-layer MLP (Linear-ReLU-Linear, Adam) for E epochs; "
        "report the fitting accuracy. The labels and the MLP's initialisation depend on --seed only, so every run "
        "is probed alike. Higher accuracy: a less compressed representation (the paper: 92.08% ERM, 97.00% PGD, "
        "64.17% Manifold Mixup, 71.00% IAT with Manifold Mixup). Writes probe.json into --out.",
        epilog="Example: iat analyze probe runs/erm runs/pgd --n 10000 --epochs 200",
    )
    q.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories written by `iat train`")
    q.add_argument("--n", type=opt.POS_INT, default=d.n,
                   help=f"randomly labelled training examples (default {d.n})")
    q.add_argument("--epochs", type=opt.int_range(1, 100_000), default=d.epochs,
                   help=f"MLP training epochs (default {d.epochs})")
    q.add_argument("--hidden", type=opt.int_range(1, 65_536), default=d.hidden,
                   help=f"MLP hidden units (default {d.hidden})")
    q.add_argument("--lr", type=opt.POS_FLOAT, default=d.lr, help=f"Adam learning rate (default {d.lr:g})")
    q.add_argument("--batch-size", type=opt.int_range(1, 10**6), default=d.batch_size,
                   help=f"examples per Adam step (default {d.batch_size})")
    q.add_argument("--seed", type=opt.int_range(0, 2**63 - 1), default=d.seed,
                   help="seed of the labels and the MLP (default 0)")
    q.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    q.add_argument("--data-dir", default=None, help="where the data set lives (default: each run's)")
    q.add_argument("--out", default=None, help="output directory (default: the first RUN_DIR)")
    q.set_defaults(run=run_probe)

    for nested_parser in (n, q):  # -q after the analysis name too, as for first-level commands
        nested_parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=QUIET_HELP)


def _out_dir(args) -> Path:
    """--out (default: the first RUN_DIR), refused before any work if it cannot become a directory."""
    from iat.rundir import outdir

    return outdir.check_out_dir(Path(args.out) if args.out is not None else Path(args.run_dirs[0]))


def _labels(run_dirs: list[str]) -> dict[str, str]:
    """Legend names: the run's method and directory name."""
    from iat.rundir.read import load_run_config

    return {r: f"{load_run_config(r).method} ({Path(r).name})" for r in run_dirs}


def run_norms(args) -> int:
    from iat.analysis.norms import norms_of_runs, norms_table, plot_norms
    from iat.rundir import files, outdir
    from iat.rundir.read import check_finished

    check_finished(args.run_dirs)
    out = _out_dir(args)
    result = norms_of_runs(args.run_dirs)
    labels = _labels(args.run_dirs)
    outdir.make_dir(out)
    files.write_json(out / "norms.json", result)
    plot_norms(result, out / "norms.png", labels=labels)
    print(norms_table(result, {r: Path(r).name for r in args.run_dirs}))
    print(f"wrote {out / 'norms.json'} and {out / 'norms.png'}")
    return 0


def run_probe(args) -> int:
    from iat.analysis.probe import probe_runs, probe_table
    from iat.rundir import files, outdir
    from iat.rundir.read import check_finished

    cfg = ProbeConfig(n=args.n, epochs=args.epochs, hidden=args.hidden, lr=args.lr, batch_size=args.batch_size,
                      seed=args.seed).validate()
    check_finished(args.run_dirs)
    out = _out_dir(args)
    result = probe_runs(args.run_dirs, cfg, args.device, args.data_dir)
    outdir.make_dir(out)
    files.write_json(out / "probe.json", result)
    print(f"random-label probe: {cfg.n} examples, {cfg.epochs} epochs, MLP {cfg.hidden} hidden units")
    print(probe_table(result, _labels(args.run_dirs)))
    print(f"wrote {out / 'probe.json'}")
    return 0
