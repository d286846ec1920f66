"""The `iat` command line: `iat COMMAND --help` explains each command.

Each command lives in its own module with `add_parser(subparsers)` and `run(args) -> int`.
Bad input exits with code 2 and one line on stderr; anything unexpected exits with code 1.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import signal
import sys

# Idle OpenMP threads sleep instead of spinning: with several processes on few cores (the demo's
# parallel runs, a test suite, anything else on the machine) spinning threads slowed training up to 7x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from iat.cli.locking import locked
from iat.cpu_memory import keep_freed_memory
from iat.errors import UsageError
from iat.training.faults import TrainingError
from iat.zoo import zoo_source

# Command modules, in the order `iat --help` lists them.
COMMANDS = ["train", "eval", "demo", "sweep", "transfer", "audit", "analyze", "reproduce", "export"]


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), not the usage block, and no
    abbreviated options (`--epoch` is not silently `--epochs`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="iat",
        description="Interpolated Adversarial Training: train robust networks that keep their clean accuracy, "
        "and evaluate them against FGSM, PGD and AutoAttack.",
        epilog="Start with `iat demo` (Fashion-MNIST, CPU, about 17 minutes on 2 cores). Eps and step sizes are "
        "given as 8/255 or as floats in [0,1], on images in [0,1].",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or log lines")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"iat.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"iat.cli.{name}":
                continue  # a command not built yet
            raise
        module.add_parser(sub)
    for command_parser in sub.choices.values():  # -q works after the command name too
        if "--quiet" not in command_parser._option_string_actions:
            command_parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                                        help="no progress bars or log lines")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _printable_stdout()
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s",
                        stream=sys.stderr)
    keep_freed_memory()  # attacks and training on the CPU reuse freed memory (iat.cpu_memory)
    previous = _on_sigterm(_terminated)  # SIGTERM unwinds like Ctrl-C: temporary files and directories removed
    try:
        with locked(args), zoo_source(getattr(args, "model_dir", None), getattr(args, "rb_download", False)):
            return args.run(args) or 0
    except UsageError as e:
        if not getattr(e, "from_main", False):  # under torchrun, rank 0 alone says what rank 0 found
            sys.stderr.write(f"iat {args.command}: error: {e}\n")
        return 2
    except TrainingError as e:  # a run of demo/reproduce/audit diverged or hit a full disk: a fault, exit 1
        sys.stderr.write(f"iat {args.command}: error: {e}\n")
        return 1
    except OSError as e:  # a full disk, a file system gone read-only: a fault of the machine (1), in one line
        sys.stderr.write(f"iat {args.command}: error: {os_error_line(e)}\n")
        return 1
    except KeyboardInterrupt as e:  # Ctrl-C (130) or SIGTERM (143); runs stopped by it wrote their checkpoints
        signum = getattr(e, "signum", signal.SIGINT)
        if _rank() == 0:  # under torchrun every rank gets the signal (torchrun stops them all): rank 0 says so
            sys.stderr.write(f"iat {args.command}: interrupted ({signal.Signals(signum).name}); continue with the "
                             "same command\n")
        return 128 + signum
    finally:
        _on_sigterm(previous)


def _rank() -> int:
    """This process's rank under torchrun (0 without it, or where RANK is not a number)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _printable_stdout() -> None:
    """A run path that is not UTF-8 (its bytes kept by Python as lone surrogates) prints as an escape, as stderr
    prints it, instead of raising UnicodeEncodeError in the middle of a table under a UTF-8 locale."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None and getattr(sys.stdout, "errors", "strict") == "strict":
        try:
            reconfigure(errors="backslashreplace")
        except (ValueError, OSError):  # a stream that cannot change now: leave it as it is
            pass


def os_error_line(e: OSError) -> str:
    """'could not write PATH: No space left on device' from an OSError that escaped the command."""
    what = e.strerror or str(e) or type(e).__name__
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        what += "; free space, then run the same command again (what was written before is intact)"
    return what if e.filename is None else f"{os.fsdecode(e.filename)}: {what}"


class Terminated(KeyboardInterrupt):
    """SIGTERM outside training (which checkpoints first): unwind like Ctrl-C, exit 143."""

    signum = signal.SIGTERM


def _terminated(signum, frame) -> None:
    raise Terminated("SIGTERM")


def _on_sigterm(handler):
    """Install `handler` for SIGTERM; return the previous one (off the main thread: nothing, None)."""
    if handler is None:
        return None
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:
        return None


if __name__ == "__main__":
    sys.exit(main())
