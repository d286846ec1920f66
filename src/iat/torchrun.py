"""`python -m iat.torchrun [torchrun's options] -m iat COMMAND ...`: torchrun, with iat's exit codes.

torchrun (torch.distributed.run, torch 2.x) turns any worker that exits non-zero into its own
ChildFailedError: a traceback of its launcher and exit code 1, printed after the worker has already said
what was wrong in one line. Its elastic agent has no way to pass a worker's exit code through. So under
plain torchrun a refusal (iat's exit code 2) reads as a crash (1), with a page of traceback after it.

This module runs torchrun's own `main` unchanged (same options, same workers, same rendezvous) and only
translates the way it ends: it exits as the first failed worker did (2 bad input, 1 a fault, 128+N for a
worker killed by signal N) without the traceback; the worker's own line is the message. A signal to the
launcher itself (Ctrl-C, SIGTERM) exits 130/143, as `iat` does.
"""

from __future__ import annotations

import logging
import signal
import sys


def exit_code(code: int) -> int:
    """A shell's exit code for a worker's: its own, or 128+N for one killed by signal N (negative)."""
    return 128 - code if code < 0 else code


def _quiet_agent() -> None:
    """The agent's log lines about a failed worker ("failed (exitcode: 2) local_rank: 0 ...") repeat, in
    torch's words, what the worker has just said; errors of the launcher itself still raise."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    _quiet_agent()
    try:
        torchrun.main(argv)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        code = exit_code(failure.exitcode)
        if failure.exitcode < 0:  # killed: the worker could say nothing itself
            sys.stderr.write(f"iat (torchrun): rank {rank} was killed by {_signal_name(-failure.exitcode)}\n")
        return code or 1
    except SignalException as e:  # the launcher got SIGTERM or SIGINT: its workers were stopped with it
        signum = int(e.sigval)
        sys.stderr.write(f"iat (torchrun): interrupted ({_signal_name(signum)}); continue with the same command "
                         "plus --resume\n")
        return 128 + signum
    except KeyboardInterrupt:
        sys.stderr.write("iat (torchrun): interrupted (SIGINT); continue with the same command plus --resume\n")
        return 130
    return 0


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


if __name__ == "__main__":
    sys.exit(main())
