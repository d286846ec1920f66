"""`iat train`: train one model with one method; writes a run directory."""

from __future__ import annotations

import argparse

from iat.attacks import BN_MODES
from iat.cli import options as opt
from iat.config import DEVICES, TrainConfig
from iat.data import dataset_names
from iat.methods import method_names
from iat.mixing import LAMBDA_MODES
from iat.models import model_names
from iat.units import format_eps

D = TrainConfig()


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (erm, mixup, manifold-mixup, pgd, iat-mixup, iat-manifold-mixup)",
        description="Train one model. Defaults are the paper's (Section 4.1): 200 epochs, SGD lr 0.1 divided by 10 "
        "at epochs 100 and 150, batch 64, PGD-7 with eps 8/255 and step 2/255, mixup alpha 1.0, manifold alpha 2.0.",
        epilog="Example: iat train --method iat-mixup --dataset fashion-mnist --arch cnn-small --epochs 10 "
        "--eps 0.1 --step-size 0.025 --out runs/iat-mixup. Writes config.json, metrics.jsonl, checkpoint.pt and "
        "model.safetensors into --out; --resume continues an interrupted run exactly.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--method", required=True, choices=method_names(), help="training method (a row of the tables)")
    p.add_argument("--dataset", required=True, choices=dataset_names(), help="data set")
    p.add_argument("--arch", required=True, choices=model_names(), help="architecture")
    p.add_argument("--out", required=True, help="run directory to create (must be new unless --resume)")
    p.add_argument("--width", type=opt.POS_INT, default=None, help="width override (smaller models for quick runs)")
    p.add_argument("--epochs", type=opt.POS_INT, default=D.epochs, help="training epochs")
    p.add_argument("--batch-size", type=opt.POS_INT, default=D.batch_size, help="examples per update")
    p.add_argument("--lr", type=opt.POS_FLOAT, default=D.lr, help="initial learning rate")
    p.add_argument("--milestones", type=opt.MILESTONES, default=None,
                   help="epochs at which lr is multiplied by --lr-gamma, e.g. 100,150 (default: epochs/2, 3*epochs/4)")
    p.add_argument("--lr-gamma", type=opt.POS_FLOAT, default=D.lr_gamma, help="lr decay factor at each milestone")
    p.add_argument("--momentum", type=opt.NONNEG_FLOAT, default=D.momentum, help="SGD momentum")
    p.add_argument("--weight-decay", type=opt.NONNEG_FLOAT, default=D.weight_decay, help="L2 weight decay")
    p.add_argument("--eps", type=opt.EPS, default=D.eps, help=f"training attack radius ({format_eps(D.eps)})")
    p.add_argument("--step-size", type=opt.STEP, default=D.step_size,
                   help=f"training PGD step ({format_eps(D.step_size)})")
    p.add_argument("--attack-steps", type=opt.POS_INT, default=D.attack_steps, help="training PGD steps")
    p.add_argument("--attack-bn", choices=BN_MODES, default=D.attack_bn,
                   help="BatchNorm mode while crafting training attacks (train: batch statistics, running "
                   "statistics left untouched)")
    p.add_argument("--mixup-alpha", type=opt.POS_FLOAT, default=D.mixup_alpha, help="Beta(a,a) for Mixup")
    p.add_argument("--manifold-alpha", type=opt.POS_FLOAT, default=D.manifold_alpha,
                   help="Beta(a,a) for Manifold Mixup")
    p.add_argument("--lam-per", choices=LAMBDA_MODES, default=D.lam_per, help="one mixing lambda per batch or example")
    p.add_argument("--seed", type=opt.NONNEG_INT, default=D.seed, help="random seed")
    p.add_argument("--device", choices=DEVICES, default=D.device, help="auto: CUDA when available, else CPU")
    p.add_argument("--data-dir", default=None, help="where the data set lives (see README: Data)")
    p.add_argument("--download", action="store_true",
                   help="download the data set with torchvision into --data-dir (default ~/.cache/iat/data) if absent")
    p.add_argument("--train-size", type=opt.POS_INT, default=None, help="use only the first N training examples")
    p.add_argument("--checkpoint-every", type=opt.NONNEG_INT, default=D.checkpoint_every,
                   help="also write checkpoint.pt every N training steps (0: only at the end of each epoch)")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA only)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint, given the same options (on the CPU "
                   "the final weights are bit-identical to an uninterrupted run's); a finished run is left as is")
    p.set_defaults(run=run)


def config_from_args(args) -> TrainConfig:
    return TrainConfig(
        method=args.method, dataset=args.dataset, arch=args.arch, width=args.width, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, milestones=args.milestones, lr_gamma=args.lr_gamma,
        momentum=args.momentum, weight_decay=args.weight_decay, eps=args.eps, step_size=args.step_size,
        attack_steps=args.attack_steps, attack_bn=args.attack_bn, mixup_alpha=args.mixup_alpha,
        manifold_alpha=args.manifold_alpha, lam_per=args.lam_per, seed=args.seed, device=args.device,
        data_dir=args.data_dir, download=args.download,
        train_size=args.train_size, checkpoint_every=args.checkpoint_every, amp=args.amp,
    ).validate()


def run(args) -> int:
    import sys

    from iat.train import TrainingError, TrainingInterrupted, is_complete, train

    cfg = config_from_args(args)
    if args.resume and is_complete(cfg, args.out):
        print(f"{args.out} is already complete ({cfg.epochs} epochs); nothing to do")
        return 0
    try:
        out = train(cfg, args.out, resume=args.resume, progress=not args.quiet)
    except TrainingError as e:  # diverged, disk full: not bad input, so exit 1 (interfaces.md)
        sys.stderr.write(f"iat train: error: {e}\n")
        return 1
    except TrainingInterrupted as e:
        saved = "checkpoint written" if e.saved else "the last checkpoint is kept"
        sys.stderr.write(f"iat train: interrupted ({e}); {saved}: continue with the same command plus --resume\n")
        return 128 + e.signum
    print(f"trained {cfg.method} on {cfg.dataset} ({cfg.arch}); run directory: {out}")
    return 0
