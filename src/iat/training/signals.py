"""Ctrl-C and SIGTERM during training: finish the step, checkpoint, stop; a second signal stops at once.

Python runs a signal handler only between bytecodes of the main thread, so a step stuck inside a native
kernel (a deadlocked OpenMP region, a corrupted heap) would never see it. A watchdog thread therefore
hears each signal through Python's wakeup fd, which the C-level handler writes at once: if training has not
stopped HANG_LIMIT_S plus three of its longest steps after the first signal (or 5 s after a second one),
it exits the process with 128 + signum, without writing anything: the last checkpoint stays intact.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from iat.training.faults import TrainingInterrupted

log = logging.getLogger("iat.train")

SIGNALS = (signal.SIGINT, signal.SIGTERM)
HANG_LIMIT_S = 60.0  # after a signal, on top of three of the run's longest steps: then training counts as stuck
SECOND_SIGNAL_S = 5.0  # after a second signal


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
        self.longest_step = 0.0  # seconds, from step_done(): a slow step is not a stuck one
        self._step_started = time.perf_counter()
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self._previous_fd = -1
        self._exited = threading.Event()
        self._thread: threading.Thread | None = None

    def step_done(self) -> None:
        """The loop finished a step (its duration sets how long a stuck step is given)."""
        now = time.perf_counter()
        self.longest_step = max(self.longest_step, now - self._step_started)
        self._step_started = now

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
        if self._previous:
            reader, writer = socket.socketpair()
            reader.setblocking(True)
            writer.setblocking(False)  # set_wakeup_fd needs it
            self._previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
            self._wakeup = reader, writer
            self._thread = threading.Thread(target=self._watch, args=(reader,), name="iat-signal-watchdog",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._exited.set()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._previous_fd)
            reader, writer = self._wakeup
            # Wake the watchdog and wait for it: closing a socket does not end a recv blocked on it, and a thread
            # still blocked there when the interpreter exits can abort the process ("terminate called ...").
            with contextlib.suppress(OSError):
                writer.send(b"\0")
            self._thread.join(timeout=5)
            reader.close()
            writer.close()
            self._wakeup = None

    def _watch(self, reader: socket.socket) -> None:
        """Count SIGINT/SIGTERM as the C-level handler reports them; exit if training does not stop in time."""
        heard: list[int] = []
        first = deadline = None
        while not self._exited.is_set():
            if deadline is not None:
                reader.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                data = reader.recv(64)
            except TimeoutError:
                self._give_up(heard[-1], time.monotonic() - first)
                return
            except OSError:  # closed by __exit__
                return
            if not data:
                return
            heard += [b for b in data if b in SIGNALS]
            if heard and first is None:
                first = time.monotonic()
                deadline = first + HANG_LIMIT_S + 3 * self.longest_step
            if len(heard) >= 2:
                deadline = min(deadline, time.monotonic() + SECOND_SIGNAL_S)

    def _give_up(self, signum: int, waited: float) -> None:
        if self._exited.is_set():
            return
        epoch, step = self.where()
        line = (f"iat: {signal.Signals(signum).name}: training did not stop within {waited:.0f} s (stuck in native "
                f"code at epoch {epoch + 1}, step {step}); exiting without a new checkpoint: the last one in "
                f"{self.out} is intact\n")
        os.write(2, line.encode(errors="replace"))
        os._exit(128 + signum)

    def interrupted(self, epoch: int, step: int) -> TrainingInterrupted:
        """The exception to raise once the checkpoint after the first signal is written."""
        return TrainingInterrupted(self.signum, self.out, epoch, step)
