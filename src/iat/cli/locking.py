"""One writer per directory: the directory each command writes, locked for the command's whole run.

`iat COMMAND` takes `outdir.lock_dir` on the directory it writes before it reads or checks anything
there, so two commands on one directory never interleave their files: the second one exits 2 with
one line naming the first one's process (see iat.rundir.outdir).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from contextlib import AbstractContextManager
from pathlib import Path

from iat.distributed import world_from_env
from iat.errors import UsageError
from iat.rundir import files, outdir


def output_dir(args: argparse.Namespace) -> tuple[Path, str] | None:
    """(directory the command writes, how the user named it), or None for a command that writes nothing."""
    command = args.command
    first = getattr(args, "run_dir", None) or (getattr(args, "run_dirs", None) or [None])[0]
    if isinstance(first, str) and first.startswith("rb:") and getattr(args, "out", None) is None:
        raise UsageError(f"{first} is a RobustBench model, not a run directory to write into: give --out DIR")
    if command == "eval":
        return (Path(args.run_dir), "run directory") if args.out is None else (Path(args.out), "--out")
    if command == "export":  # --out is a file: its folder is what the command writes
        return Path(args.out).parent, "--out"
    if command == "reproduce" and getattr(args, "out", None) is None:
        from iat.reproduce.experiment import load_experiment

        args.out = f"reproduce-{load_experiment(args.name, args.scale).name}"  # the default, resolved once
    out = getattr(args, "out", None)
    if out is not None:
        return Path(out), "--out"
    first = getattr(args, "run_dir", None) or (getattr(args, "run_dirs", None) or [None])[0]
    return (Path(first), "--out (the run directory)") if first is not None else None


def check_paths(args: argparse.Namespace) -> None:
    """Refuse, as typed, a path no file system takes: `--out ''` (Path('') is the current directory, where it
    would write), a NUL byte, a name too long (ENAMETOOLONG from whichever file call came first)."""
    for attr, what in (("out", "--out"), ("run_dir", "run directory"), ("run_dirs", "run directory"),
                       ("surrogate", "--surrogate"), ("data_dir", "--data-dir")):
        values = getattr(args, attr, None)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str):
                outdir.check_path(value, what)


def locked(args: argparse.Namespace) -> AbstractContextManager:
    """The lock on the directory `args` writes (nothing for a command that writes none)."""
    if world_from_env().rank != 0:  # under torchrun, rank 0 holds it for every rank
        return contextlib.nullcontext()
    check_paths(args)
    target = output_dir(args)
    if target is None:
        return contextlib.nullcontext()
    path, what = target
    if what != "--out" and not path.is_dir():
        return contextlib.nullcontext()  # not a run directory: the command says so in its own words
    if what == "run directory" and not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"run directory {path} is not writable, so {files.EVAL} could not be saved; "
                         "make it writable, or write eval.json elsewhere with --out DIR")
    outdir.check_out_dir(path, what)
    return outdir.lock_dir(path, what)

