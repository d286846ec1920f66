"""Eps and step sizes: accept `8/255` or `0.0314`, store floats in [0,1], print both forms."""

from __future__ import annotations

import math
from fractions import Fraction

from iat.errors import UsageError


def parse_fraction(text: str | float, name: str = "value") -> float:
    """Parse `8/255`, `0.0314` or a float into a float; refuse anything else with a UsageError."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        s = str(text).strip()
        try:
            if "/" in s:
                num, den = s.split("/", 1)
                value = float(num) / float(den)
            else:
                value = float(s)
        except (ValueError, ZeroDivisionError):
            raise UsageError(f"{name} {text!r} is not a number; write it as 8/255 or 0.0314") from None
    if not math.isfinite(value):
        raise UsageError(f"{name} {text!r} is not a finite number")
    return value


def parse_eps(text: str | float, name: str = "--eps", allow_zero: bool = True) -> float:
    """An L-inf radius on images in [0,1]: `8/255` or a float in [0,1]."""
    value = parse_fraction(text, name)
    if value < 0 or value > 1 or (value == 0 and not allow_zero):
        limit = "(0, 1]" if not allow_zero else "[0, 1]"
        hint = ("it must be positive" if value <= 0 and not allow_zero else "an attack radius is not negative"
                if value < 0 else "images are in [0,1], so write 8/255 rather than 8")
        raise UsageError(
            f"{name} {text!r} = {value:g} is outside {limit}: {hint}"
        )
    return value


def parse_eps_list(text: str, name: str = "--eps") -> list[float]:
    """A comma-separated list of eps values: `1/255,2/255,10/255`."""
    parts = [p for p in str(text).split(",") if p.strip()]
    if not parts:
        raise UsageError(f"{name} {text!r} is an empty list; give values like 1/255,2/255,10/255")
    return [parse_eps(p, name) for p in parts]


def parse_int_list(text: str, name: str, minimum: int = 1, maximum: int | None = None) -> list[int]:
    """A comma-separated list of integers: `5,10,20`."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise UsageError(f"{name} {text!r} is an empty list; give values like 5,10,20")
    out = []
    for p in parts:
        try:
            v = int(p)
        except ValueError:
            raise UsageError(f"{name}: {p!r} is not an integer; give values like 5,10,20") from None
        if v < minimum or (maximum is not None and v > maximum):
            raise UsageError(f"{name}: {v} is outside [{minimum}, {maximum if maximum else 'inf'}]")
        out.append(v)
    return out


def format_eps(value: float, style: str = "long") -> str:
    """The one way an eps or step size is printed, in three styles:

    long  (reports, headers): `8/255 = 0.0314`, `1/10 = 0.1000` for a small fraction, else `0.1234`-like `{:g}`;
    short (table headers):    `8/255` for whole 255ths, else `0.1`;
    255   (axes in 255ths):   `8`, or `25.5` when the value is not a whole number of 255ths.
    """
    k = value * 255
    whole_255ths = abs(k - round(k)) < 1e-6 and round(k) != 0
    if style == "255":
        return f"{round(k)}" if abs(k - round(k)) < 1e-6 else f"{k:.3g}"
    if style == "short":
        return f"{round(k)}/255" if whole_255ths and round(value, 3) != value else f"{value:g}"
    if whole_255ths:
        return f"{round(k)}/255 = {value:.4f}"
    frac = Fraction(value).limit_denominator(255)
    if frac.denominator != 1 and abs(float(frac) - value) < 1e-9 and frac.denominator <= 20:
        return f"{frac.numerator}/{frac.denominator} = {value:.4f}"
    return f"{value:g}"
