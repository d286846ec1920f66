"""`iat reproduce NAME`: one of the paper's tables or figures, trained, measured and reported."""

from __future__ import annotations

from iat.cli import options as opt
from iat.cli.demo import add_launch_options
from iat.cli.train import add_log_option, request_tracking
from iat.reproduce.experiment import SCALES, experiment_names


def add_parser(sub) -> None:
    names = experiment_names()
    p = sub.add_parser(
        "reproduce",
        help="re-run one of the paper's experiments (table1..table7, fig1, probe) and compare with the paper",
        description="Train every run an experiment of the paper needs, for each seed, measure them, and write "
        "report.md (our numbers in the paper's layout, beside the paper's, and the plots), results.json and one "
        "run directory per method and seed into --out. Calling it again on the same --out skips finished runs, "
        "resumes interrupted ones and reuses finished measurements. Each experiment's settings are in "
        f"src/iat/experiments/NAME.toml. Experiments: {', '.join(names)}.",
        epilog="Examples: `iat reproduce table2 --scale smoke` (Fashion-MNIST, about a minute on a CPU, to check "
        "the pipeline); `iat reproduce table2 --seeds 3` (the paper's setting: CIFAR-10, 200 epochs; a GPU).",
    )
    p.add_argument("name", metavar="NAME", help=f"experiment: {', '.join(names)}, or the path of a .toml file")
    p.add_argument("--seeds", type=opt.POS_INT, default=1, help="seeds per method: mean ± std over seeds (default 1)")
    p.add_argument("--scale", choices=SCALES, default="paper",
                   help="paper: the paper's settings (a GPU); smoke: every run shrunk to minutes on a CPU, "
                   "CIFAR-10/SVHN replaced by Fashion-MNIST (default: paper)")
    p.add_argument("--out", default=None, help="output directory (default: reproduce-NAME); with --launcher ray "
                   "on a cluster, a path every node sees (a shared file system)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--data-dir", default=None, help="where the data set lives (default: iat's data directory)")
    add_log_option(p)
    add_launch_options(p)
    p.add_argument("--eval-procs", type=opt.POS_INT, default=1, metavar="N",
                   help="share each run's AutoAttack measurement among N processes (one GPU each; gloo on a CPU): "
                   "after training, `python -m iat.torchrun --standalone --nproc_per_node N -m iat eval RUN --attacks "
                   "clean,pgd20,autoattack ...` for each run. The processes take turns over AutoAttack's batches of "
                   "min(500, images/N) images: one process's numbers with that batch (1,000 images on 8 GPUs: batches "
                   "of 125, another draw of AutoAttack's randomness than 500's, cached apart). Start iat reproduce "
                   "itself without torchrun (default: 1, in each run's own process)")
    p.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    from iat.distributed import world_from_env
    from iat.errors import UsageError
    from iat.reproduce import reproduce
    from iat.tracking import log_experiment

    if world_from_env().size > 1:  # every rank would train and measure the whole experiment
        raise UsageError("iat reproduce starts its own processes: run it without torchrun; --eval-procs N shares "
                         "each AutoAttack measurement among N processes")

    request_tracking(args)  # each run logs into its own directory; pool workers inherit the request
    results = reproduce(args.name, args.out, seeds=args.seeds, scale=args.scale, device=args.device,
                        data_dir=args.data_dir, progress=not args.quiet, launcher=args.launcher, jobs=args.jobs,
                        runs_per_gpu=args.runs_per_gpu, ray_address=args.ray_address, eval_procs=args.eval_procs)
    out = Path(args.out) if args.out is not None else Path(f"reproduce-{results['experiment']}")
    log_experiment(out, {"experiment": results["experiment"], "scale": args.scale, "seeds": args.seeds})
    report = (out / "report.md").read_text()
    print(report)
    print(f"trained {len(results['trained'])} run(s) in {results['seconds'] / 60:.1f} min; "
          f"report: {out / 'report.md'}, results: {out / 'results.json'}")
    return 0
