"""Strict fp32 evaluation: the one context every evaluation path runs in (eval, sweeps, transfer, audit, the
overfitting guard, the experiments' measurements).

Inside it autocast is off on every device, TF32 is off, and cuDNN's autotuning is off (the evaluation engine
drops attacked examples as they fall, so its batches take many shapes, and each new shape would be timed
again); on exit every flag is as it was. It is a context manager and a decorator: `@fp32_evaluation()` on an
entry point makes the whole call strict, whatever a training run in the same process left behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def kept_flags() -> Iterator[None]:
    """torch's process-wide numeric flags (TF32 for matmuls and cuDNN, cuDNN autotuning, and the matmul precision
    of `torch.set_float32_matmul_precision`) put back on exit."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark
    precision = _matmul_precision()
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved
        if precision is not None:  # set through the new API again: torch refuses to read a mix of the two
            torch.set_float32_matmul_precision(precision)


def _matmul_precision() -> str | None:
    """torch.get_float32_matmul_precision(), or None where a mix of its old and new APIs makes torch refuse it."""
    try:
        return torch.get_float32_matmul_precision()
    except RuntimeError:
        return None


@contextmanager
def fp32_evaluation() -> Iterator[dict]:
    """Autocast, TF32 and cuDNN autotuning off inside, restored after; yields what ran (eval.json)."""
    with kept_flags():
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
        with torch.autocast("cpu", enabled=False):
            if torch.cuda.is_available():
                with torch.autocast("cuda", enabled=False):
                    yield {"autocast": "fp32", "tf32": False}
            else:
                yield {"autocast": "fp32", "tf32": False}
