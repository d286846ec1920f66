"""The surrogate of the audit's transfer check: a separate, quickly trained model of the same data set.

A black-box attack crafted on it should be weaker than the white-box attack on the audited model;
trained here when the user gives none, in a temporary directory that is removed afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

from torch import nn

from iat.config import TrainConfig, resolve_device
from iat.rundir.read import load_run_model
from iat.training import train

log = logging.getLogger(__name__)

# The surrogate trained when none is given: a small CNN, standard (ERM) training, a few epochs.
SURROGATE = {"method": "erm", "arch": "cnn-small", "width": 16, "epochs": 5, "batch_size": 64, "lr": 0.05,
             "train_size": 5000}


def train_surrogate(dataset: str, data_dir: str | None = None, device: str = "auto", *, seed: int = 1,
                    progress: bool = False) -> nn.Module:
    """A quickly trained, separate model for the transfer check (see SURROGATE); nothing is kept on disk."""
    cfg = TrainConfig(dataset=dataset, data_dir=data_dir, device=device, seed=seed, **SURROGATE)
    with _sigterm_unwinds(), tempfile.TemporaryDirectory(prefix="iat-surrogate-") as tmp:
        log.info("training a surrogate model for the transfer check: %s", SURROGATE)
        train(cfg, Path(tmp) / "surrogate", progress=progress)
        return load_run_model(Path(tmp) / "surrogate", resolve_device(device))


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt here (training's own guard takes it while it trains), so the
    temporary directory is removed however the process is asked to stop."""
    def stop(signum, frame):
        raise _Terminated("SIGTERM")

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: signals stay the caller's business
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Terminated(KeyboardInterrupt):
    signum = signal.SIGTERM  # the command line exits 128 + signum = 143
