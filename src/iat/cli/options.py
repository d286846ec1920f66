"""Argument types shared by the commands: parse once, fail with one clear line."""

from __future__ import annotations

import argparse
import math

from iat.errors import UsageError
from iat.units import parse_eps, parse_eps_list, parse_fraction, parse_int_list


def _wrap(fn):
    """An argparse type from a parser that raises UsageError: the message becomes argparse's one line."""
    def parse(text: str):
        try:
            return fn(text)
        except UsageError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = fn.__name__
    return parse


def integer(text: str) -> int:
    """A whole number (a TrainConfig option's range is TrainConfig.validate's to check)."""
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{text!r} is not an integer") from None


def int_range(lo: int, hi: int | None = None):
    """An argument type: a whole number in [lo, hi] (a bound keeps a value from overflowing a seed or
    asking for more memory than any machine has)."""
    def in_range(text: str) -> int:
        v = integer(text)
        if v < lo:
            raise UsageError(f"{v} must be at least {lo}")
        if hi is not None and v > hi:
            raise UsageError(f"{v} is above {hi}, the most this option allows")
        return v

    return _wrap(in_range)


def positive_number(text: str) -> float:
    """A number (or fraction such as 8/255) > 0."""
    v = parse_fraction(text)
    if v <= 0:
        raise UsageError(f"{text!r} must be greater than 0")
    return v


# Types only, for the flags of `iat train`: TrainConfig.validate checks the ranges, once, in one message.
INT = _wrap(integer)
NUMBER = _wrap(parse_fraction)  # 0.1 or 8/255
INTS = _wrap(lambda t: parse_int_list(t, "milestones", minimum=-math.inf))
# The other commands' own options.
EPS = _wrap(lambda t: parse_eps(t, "eps"))
STEP = _wrap(lambda t: parse_eps(t, "step size", allow_zero=False))
EPS_LIST = _wrap(lambda t: parse_eps_list(t, "eps list"))
STEPS_LIST = _wrap(lambda t: parse_int_list(t, "steps list", 1, 100_000))
POS_INT = int_range(1)
POS_FLOAT = _wrap(positive_number)


def add_zoo_options(p) -> None:
    """--model-dir and --download for RobustBench zoo models given as rb:NAME (iat.zoo)."""
    p.add_argument("--model-dir", default=None, metavar="DIR",
                   help="rb:NAME (a RobustBench model, pip install 'iat[robustbench]'): the folder of its checkpoints, "
                   "in RobustBench's layout DIR/DATASET/Linf/NAME.pt (default: models)")
    p.add_argument("--download", dest="rb_download", action="store_true",
                   help="rb:NAME: fetch a missing RobustBench checkpoint into --model-dir (otherwise nothing is "
                   "downloaded)")
