"""`iat demo`: the six methods on Fashion-MNIST, in the paper's table layout, on a CPU."""

from __future__ import annotations

from iat.cli import options as opt
from iat.cli.train import add_log_option, request_tracking
from iat.methods import method_names, paper_method_names
from iat.models import model_names
from iat.reproduce.experiment import DEMO, load_experiment
from iat.reproduce.launch import LAUNCHERS
from iat.units import format_eps


def add_parser(sub) -> None:
    d = load_experiment(DEMO).settings  # the defaults shown here are experiments/demo.toml's
    p = sub.add_parser(
        "demo",
        help="the paper's white-box table at CPU scale on Fashion-MNIST (about 17 minutes on 2 cores)",
        description="Train the six methods (erm, mixup, manifold-mixup, pgd, iat-mixup, iat-manifold-mixup) with "
        "the same budget on Fashion-MNIST and evaluate each on the 10,000 test images: clean, FGSM, PGD-7 and "
        "PGD-20 (and AutoAttack on the first 100, with the autoattack extra). Prints the table and writes "
        "results.json, table.md, tradeoff.png and one run directory per method and seed. "
        "Calling it again on the same --out resumes and skips finished runs. Its settings are in "
        "src/iat/experiments/demo.toml; it runs through the same runner as `iat reproduce`.",
    )
    p.add_argument("--out", default="demo-out", help="output directory (with --launcher ray on a cluster: a path "
                   "every node sees) (default: demo-out)")
    p.add_argument("--seeds", type=opt.POS_INT, default=2, help="seeds per method (mean ± std over seeds) (default: 2)")
    p.add_argument("--methods", default=",".join(paper_method_names()),
                   help="comma-separated methods, shown in the registry's order: the paper's six (the default), and "
                   "the baselines trades, mart, iat-trades (e.g. --methods erm,pgd,iat-mixup,trades)")
    p.add_argument("--arch", choices=model_names(), default=d.arch, help=f"architecture (default: {d.arch})")
    p.add_argument("--epochs", type=opt.POS_INT, default=d.epochs, help=f"epochs per run (default: {d.epochs})")
    p.add_argument("--train-size", type=opt.POS_INT, default=d.train_size, help="training images used (default: all)")
    p.add_argument("--test-size", type=opt.POS_INT, default=d.test_size, help="test images (default: all 10,000)")
    p.add_argument("--eps", type=opt.EPS, default=d.eps,
                   help=f"attack radius for training and evaluation (default: {format_eps(d.eps)})")
    p.add_argument("--step-size", type=opt.STEP, default=d.step_size,
                   help=f"PGD step size (default: {format_eps(d.step_size)})")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: CUDA when available, else CPU (default: auto)")
    add_launch_options(p)
    add_log_option(p)
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST's idx files (default: Debian's package)")
    p.set_defaults(run=run)


def add_launch_options(p) -> None:
    """--launcher, --jobs and --runs-per-gpu, shared with `iat reproduce`."""
    p.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="where the runs execute: local (processes on this machine) or ray (one Ray task per run; "
                   "with --ray-address, on that cluster, where --out must be a path every node sees) "
                   "(default: local)")
    p.add_argument("--jobs", type=opt.POS_INT, default=None,
                   help="runs trained at once, one thread each (default: one per CPU core, at most 6, and 1 on a GPU; "
                   "with --ray-address, the cluster's GPUs, else its CPUs)")
    p.add_argument("--runs-per-gpu", type=opt.POS_INT, default=1, metavar="N",
                   help="on GPUs: N runs at once on each GPU (a batch-64 run leaves much of a large GPU idle); the "
                   "local launcher gives each worker one GPU, Ray asks 1/N of a GPU per run (default: 1)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="with --launcher ray: the Ray cluster to use (`auto`, or HEAD_IP:6379 as `ray start --head` "
                   "prints; default: a local Ray started and stopped for this call)")


def run(args) -> int:
    from iat.demo import demo_experiment, run_demo
    from iat.errors import UsageError

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in method_names()]
    if not methods:
        raise UsageError(f"--methods {args.methods!r} names no method; give e.g. erm,pgd,iat-mixup (choose from "
                         f"{', '.join(method_names())})")
    if unknown:
        raise UsageError(f"--methods: unknown method {unknown[0]!r}; choose from {', '.join(method_names())}")
    methods = [m for m in method_names() if m in methods]  # the paper's row order, each once
    request_tracking(args)  # each run logs into its own directory; pool workers inherit the request
    exp = demo_experiment(methods, arch=args.arch, epochs=args.epochs, train_size=args.train_size,
                          test_size=args.test_size, eps=args.eps, step_size=args.step_size)
    results = run_demo(exp, args.out, seeds=args.seeds, device=args.device, data_dir=args.data_dir,
                       progress=not args.quiet, launcher=args.launcher, jobs=args.jobs,
                       runs_per_gpu=args.runs_per_gpu, ray_address=args.ray_address)
    from iat.tracking import log_experiment

    log_experiment(args.out, {"experiment": "demo", "methods": ",".join(methods), "seeds": args.seeds})
    print(open(f"{args.out}/table.md").read())
    print(f"wall time: {results['seconds'] / 60:.1f} min; results in {args.out}/results.json")
    return 0
