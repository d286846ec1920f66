"""Matplotlib without a display (Agg), and PNGs written atomically like every other output file."""

from __future__ import annotations

import io
from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def readable(text: str) -> str:
    """`text` with the undecodable bytes of a file name (kept by Python as lone surrogates) shown as U+FFFD:
    matplotlib's font code raises on a surrogate, so a run under a non-UTF-8 path could not be plotted."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def save_png(fig, path: str | Path, dpi: int = 120) -> None:
    """Write `fig` to `path` atomically and close it."""
    from iat.rundir import files

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    files.atomic_write_bytes(path, buf.getvalue())
