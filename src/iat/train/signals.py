"""Ctrl-C and SIGTERM during training: finish the step, checkpoint, stop; a second signal stops at once."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from pathlib import Path

from iat.train.errors import TrainingInterrupted

log = logging.getLogger("iat.train")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalGuard:
    """`with SignalGuard(out, where) as guard:` records SIGINT/SIGTERM in `guard.signum` for the loop to
    act on at the end of the step; a second one raises TrainingInterrupted(saved=False) at once.

    `where()` gives the run's (epoch, step) for that message. The previous handlers come back on exit.
    Off the main thread Python cannot install handlers, and the guard does nothing.
    """

    def __init__(self, out: Path, where: Callable[[], tuple[int, int]]):
        self.out, self.where = out, where
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _on_signal(self, signum, frame) -> None:
        if self.signum is not None:  # asked twice: stop now, the last checkpoint stays as it is
            raise TrainingInterrupted(signum, self.out, *self.where(), saved=False)
        self.signum = signum
        log.info("%s: finishing this step, then writing a checkpoint (again to stop at once)",
                 signal.Signals(signum).name)

    def __enter__(self) -> SignalGuard:
        for sig in SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread: signals stay the caller's business
                break
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def interrupted(self, epoch: int, step: int) -> TrainingInterrupted:
        """The exception to raise once the checkpoint after the first signal is written."""
        return TrainingInterrupted(self.signum, self.out, epoch, step)
