"""Argument types shared by the commands: parse once, fail with one clear line."""

from __future__ import annotations

import argparse

from iat.errors import UsageError
from iat.units import parse_eps, parse_eps_list, parse_fraction, parse_int_list


def _wrap(fn):
    def parse(text: str):
        try:
            return fn(text)
        except UsageError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = fn.__name__
    return parse


def int_at_least(lo: int):
    """A whole number >= lo."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise UsageError(f"{text!r} is not an integer") from None
        if v < lo:
            raise UsageError(f"{v} must be at least {lo}")
        return v

    return parse


def float_above_zero(strictly: bool):
    """A number (or fraction such as 8/255) > 0, or >= 0 unless `strictly`."""
    def parse(text: str) -> float:
        v = parse_fraction(text)
        if v < 0 or (strictly and v == 0):
            raise UsageError(f"{text!r} must be {'greater than' if strictly else 'at least'} 0")
        return v

    return parse


EPS = _wrap(lambda t: parse_eps(t, "eps"))
STEP = _wrap(lambda t: parse_eps(t, "step size", allow_zero=False))
EPS_LIST = _wrap(lambda t: parse_eps_list(t, "eps list"))
STEPS_LIST = _wrap(lambda t: parse_int_list(t, "steps list", 1, 100_000))
MILESTONES = _wrap(lambda t: parse_int_list(t, "milestones", 1))
POS_INT = _wrap(int_at_least(1))
NONNEG_INT = _wrap(int_at_least(0))
POS_FLOAT = _wrap(float_above_zero(strictly=True))
NONNEG_FLOAT = _wrap(float_above_zero(strictly=False))


def int_range(lo: int, hi: int):
    """An argument type: a whole number in [lo, hi] (a bound keeps a value from overflowing a seed or
    asking for more memory than any machine has)."""
    def in_range(text: str) -> int:
        v = int_at_least(0)(text)  # "-1 must be at least 0" before the range's own bound, as always
        if v < lo:
            raise UsageError(f"{v} must be at least {lo}")
        if v > hi:
            raise UsageError(f"{v} is above {hi}, the most this option allows")
        return v

    return _wrap(in_range)


def add_zoo_options(p) -> None:
    """--model-dir and --download for RobustBench zoo models given as rb:NAME (iat.zoo)."""
    p.add_argument("--model-dir", default=None, metavar="DIR",
                   help="rb:NAME (a RobustBench model, pip install 'iat[robustbench]'): the folder of its checkpoints, "
                   "in RobustBench's layout DIR/DATASET/Linf/NAME.pt (default: models)")
    p.add_argument("--download", dest="rb_download", action="store_true",
                   help="rb:NAME: fetch a missing RobustBench checkpoint into --model-dir (otherwise nothing is "
                   "downloaded)")
