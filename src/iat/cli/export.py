"""`iat export`: a run's model as a file that needs torch only (torch.export), its weights and a model card."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write a run's model as a torch.export program (FILE.pt2) that loads without iat",
        description="Write the trained network of a run as a torch.export program: images (N, C, H, W) in [0,1] "
        "in, logits out, normalization inside, any batch size; load it with torch.export.load(FILE).module() "
        "where torch is installed and iat is not. Beside it: FILE.safetensors (the same weights) and README.md, "
        "a model card with the data set, method, eps, the clean / PGD-20 / AutoAttack accuracy from the run's "
        "eval.json (with their numbers of test images) and the command that trained it.",
        epilog="Example: iat export runs/pgd --out exported/pgd.pt2",
    )
    p.add_argument("run_dir", help="a finished run directory written by `iat train`")
    p.add_argument("--out", required=True, metavar="FILE.pt2",
                   help="the program file to write; FILE.safetensors and README.md go beside it (its folder is "
                   "created if absent; a README.md there that `iat export` did not write is never replaced)")
    p.add_argument("--weights", choices=("last", "ema"), default="last",
                   help="last (model.safetensors) or ema (model_ema.safetensors, a run trained with --ema) "
                   "(default: last)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from iat.export import export_run

    paths = export_run(args.run_dir, args.out, args.weights)
    print(f"wrote {paths.program}, {paths.weights} and {paths.card}")
    return 0
