"""`iat train`: train one model with one method; writes a run directory.

The flags are built from TrainConfig's fields (their help, default, unit and range live there): a flag parses
its value's type, and TrainConfig.validate checks the rest (range, names) in one place, in one message; only
--out and --resume are this command's own.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from iat.cli import options as opt
from iat.config import WAS_ON_OFF, TrainConfig, choices_of, flag, kind_of
from iat.data import dataset_choices
from iat.distributed import speaks
from iat.methods import method_names
from iat.models import model_names
from iat.rundir.read import check_model_size
from iat.training import TrainingError, TrainingInterrupted, is_complete, train
from iat.units import format_eps

# Options that are not flags: free-form provenance, set by experiments and the demo.
NOT_FLAGS = ("extra",)
# The registries whose names `iat train --help` lists beside the required flags.
REGISTRIES = {"method": method_names, "dataset": dataset_choices, "arch": model_names}


class OnOffFlag(argparse.Action):
    """--NAME turns a switch on, --no-NAME off. The older `--NAME on|off` of the switches that took those
    words (config.WAS_ON_OFF) still works for one release, with a one-line warning (scripts written for it
    keep running)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs):
        name = option_strings[0]
        super().__init__([name, "--no-" + name[2:]], dest, nargs="?", choices=("on", "off"), **kwargs)

    def __call__(self, parser, namespace, value, option_string=None):
        negated = option_string.startswith("--no-")
        if value is not None:
            if negated:
                parser.error(f"{option_string} takes no value")
            use = self.option_strings[0] if value == "on" else self.option_strings[1]
            sys.stderr.write(f"iat train: warning: {option_string} {value} is deprecated and goes in the next "
                             f"release; use {use}\n")
        setattr(namespace, self.dest, not negated and value != "off")


_TYPES = {"int": opt.INT, "float": opt.NUMBER, "ints": opt.INTS}  # str and path: the text as given


def _flag_kwargs(f: dataclasses.Field) -> dict:
    """add_argument's keyword arguments for a TrainConfig field: the type from its annotation (and the
    words of a Literal); its range and a registry's names are TrainConfig.validate's to check."""
    meta, kind = f.metadata, kind_of(f)
    if meta["required_flag"]:
        names = REGISTRIES[f.name]()  # listed for the reader; TrainConfig.validate checks the value
        return {"required": True, "help": f"{meta['help']}: {', '.join(n for n in names if ':' not in n)}"}
    kwargs = {"default": f.default, "help": meta["help"]}
    if f.name in WAS_ON_OFF:
        return {**kwargs, "action": OnOffFlag}
    if kind == "bool":  # a flag that is on by default is turned off with --no-NAME
        return {**kwargs, "action": argparse.BooleanOptionalAction if f.default else "store_true"}
    if meta["unit"] == "eps":
        kwargs["help"] = f"{meta['help']} (default: {format_eps(f.default)})"
    return {**kwargs, "type": _TYPES.get(kind), "choices": choices_of(f)}


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, except where there is none (required flags, None) or the help gives its own."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or action.default is None or "(default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)

    def _format_args(self, action: argparse.Action, default_metavar: str) -> str:
        return "" if isinstance(action, OnOffFlag) else super()._format_args(action, default_metavar)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if isinstance(action, OnOffFlag):  # the deprecated on|off value is not advertised
            return ", ".join(action.option_strings)
        return super()._format_action_invocation(action)


def flag_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(TrainConfig) if f.name not in NOT_FLAGS]


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (erm, mixup, manifold-mixup, pgd, iat-mixup, iat-manifold-mixup)",
        description="Train one model. Defaults are the paper's (Section 4.1): 200 epochs, SGD lr 0.1 divided by 10 "
        "at epochs 100 and 150, batch 64, PGD-7 with eps 8/255 and step 2/255, mixup alpha 1.0, manifold alpha 2.0.",
        epilog="Example: iat train --method iat-mixup --dataset fashion-mnist --arch cnn-small --epochs 10 "
        "--eps 0.1 --step-size 0.025 --out runs/iat-mixup. Writes config.json, metrics.jsonl, checkpoint.pt and "
        "model.safetensors into --out; --resume continues an interrupted run exactly.",
        formatter_class=_DefaultsFormatter,
    )
    fields = flag_fields()
    required = [f for f in fields if f.metadata["required_flag"]]
    for f in required:
        p.add_argument(flag(f.name), **_flag_kwargs(f))
    p.add_argument("--out", required=True, help="run directory to create (must be new unless --resume)")
    for f in fields:
        if f not in required:
            p.add_argument(flag(f.name), **_flag_kwargs(f))
    add_log_option(p)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint, given the same options (on the CPU "
                   "the final weights are bit-identical to an uninterrupted run's); a finished run is left as is")
    p.set_defaults(run=run)


def add_log_option(p: argparse.ArgumentParser) -> None:
    """--log TRACKERS, shared by train, reproduce and demo (iat.tracking)."""
    p.add_argument("--log", default=None, metavar="TRACKERS",
                   help="log each run to experiment trackers, comma-separated: tensorboard (RUN/tensorboard/), "
                   "mlflow (a file store in RUN/mlruns/, or MLFLOW_TRACKING_URI), wandb (offline in RUN/wandb/ "
                   "unless WANDB_MODE is set); each needs its extra, e.g. pip install 'iat[tensorboard]'")


def request_tracking(args: argparse.Namespace) -> None:
    """Refuse an unknown or uninstalled tracker in --log, else ask the runs of this command to log to it."""
    from iat.tracking import parse_log, request

    request(parse_log(args.log) if getattr(args, "log", None) is not None else None)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{f.name: getattr(args, f.name) for f in flag_fields()}).validate()


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    check_model_size(cfg)  # before anything is allocated
    request_tracking(args)
    if args.resume and is_complete(cfg, args.out):
        print(f"{args.out} is already complete ({cfg.epochs} epochs); nothing to do")
        return 0
    try:
        out = train(cfg, args.out, resume=args.resume, progress=not args.quiet)
    except TrainingError as e:  # diverged, disk full: not bad input, so exit 1 (interfaces.md)
        message = str(e)
        if not (Path(args.out) / "checkpoint.pt").is_file():  # diverged before the first checkpoint
            kept = f"the last good checkpoint in {Path(args.out)} is kept"
            message = message.replace(kept, "no checkpoint was written")
        if speaks(e):  # under torchrun: once, not once per rank
            sys.stderr.write(f"iat train: error: {message}\n")
        return 1
    except TrainingInterrupted as e:
        kept = "the last checkpoint is kept" if (Path(args.out) / "checkpoint.pt").is_file() else \
            "no checkpoint was written yet, so the run starts afresh"
        saved = "checkpoint written" if e.saved else kept
        if speaks():
            sys.stderr.write(f"iat train: interrupted ({e}); {saved}: continue with the same command plus --resume\n")
        return 128 + e.signum
    if speaks():
        print(f"trained {cfg.method} on {cfg.dataset} ({cfg.arch}); run directory: {out}")
    return 0
