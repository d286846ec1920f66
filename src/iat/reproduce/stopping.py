"""How a launcher stops on SIGINT or SIGTERM: the signals it takes, and the exception it raises after."""

from __future__ import annotations

import signal

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the launcher: running runs wrote their checkpoints, none started after it.

    `signum` gives the exit code (128 + signum: 130 for Ctrl-C, 143 for SIGTERM).
    """

    def __init__(self, signum: int):
        super().__init__(f"{signal.Signals(signum).name}: stopped; every run wrote its checkpoint; "
                         "continue with the same command")
        self.signum = signum
