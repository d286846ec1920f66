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
    """torch's process-wide numeric flags (TF32 for matmuls and cuDNN, cuDNN autotuning) put back on exit."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


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
