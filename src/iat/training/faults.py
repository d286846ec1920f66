"""Why training stopped: the exceptions `iat train` turns into one line and an exit code."""

from __future__ import annotations

import signal
from pathlib import Path


class TrainingError(RuntimeError):
    """Training stopped for a reason that is not bad input; the message says why and what to do.

    `iat train` prints it on one line and exits with code 1.
    """


class TrainingDiverged(TrainingError):
    """The loss or the weights became NaN or infinite; the last good checkpoint is kept."""


class CheckpointWriteError(TrainingError):
    """A checkpoint or the final weights could not be written (e.g. a full disk); the previous
    checkpoint is intact."""


class CompileFailed(TrainingError):
    """`--compile` could not compile the model (no C++ compiler on the CPU, no Triton on the GPU, ...)."""


def compile_failure(error: BaseException) -> CompileFailed | None:
    """A CompileFailed naming `error`'s first line if torch.compile raised it, else None."""
    if not type(error).__module__.startswith(("torch._dynamo", "torch._inductor")):
        return None
    root = error  # torch wraps the cause ("backend='inductor' raised:"): name the innermost one
    while (inner := getattr(root, "inner_exception", None) or root.__cause__) is not None and str(inner).strip():
        root = inner
    first = (str(root).strip().splitlines() or [""])[0]
    return CompileFailed(f"--compile failed ({type(root).__name__}: {first}); continue without it (--resume, no "
                         "--compile: the same arithmetic, only slower), or install what it names (a C++ compiler on "
                         "the CPU, Triton on a GPU)")


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training; a checkpoint was written unless `saved` is False."""

    def __init__(self, signum: int, out: Path, epoch: int, step: int, *, saved: bool = True):
        super().__init__(f"{signal.Signals(signum).name} at epoch {epoch + 1}, step {step}")
        self.signum, self.out, self.epoch, self.step, self.saved = signum, out, epoch, step, saved


def diverged(what: str, out: Path, epoch: int, step: int) -> TrainingDiverged:
    """'the loss became nan at epoch 1, step 5; ...' (`epoch` 0-based, `step` 1-based within it)."""
    return TrainingDiverged(f"{what} at epoch {epoch + 1}, step {step}; the last good checkpoint in {out} is kept; "
                            "start a new run with a lower --lr")
