"""A run directory's files: their names, each written atomically, and JSON read back with one clear error.

Configuration and results are JSON; weights and the resumable training state are tensors, written through
here and read back without executing code by iat.rundir.tensors. Who may write a directory at all (one
process at a time) is iat.rundir.outdir's business.

Every file is written to a temporary file beside its target (`.NAME.XXXX.tmp`), flushed and
fsynced, then renamed over the target: a crash at any moment leaves either the old file or the new
one, never half of one. A temporary file left by a killed process is ignored by every reader and
removed by `clean_temp_files` when the run is resumed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from iat.errors import UsageError

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
EVAL = "eval.json"
LOCK = ".iat.lock"

TEMP_FILE = re.compile(r"^\..+\.[^.]+\.tmp$")  # what atomic_write_bytes leaves behind if killed

# Test-only fault injection, read from the environment at each write so that a test can start a real
# training process and have it die mid-write. `IAT_TEST_WRITE_DELAY=SECONDS` sleeps after writing half
# the temporary file (a wide window for an outside `kill -9`); `IAT_TEST_KILL_IN_WRITE=NAME:N` sends
# SIGKILL to this process at that point of the N-th write of file NAME. Unset, they cost nothing.
_TEST_DELAY, _TEST_KILL = "IAT_TEST_WRITE_DELAY", "IAT_TEST_KILL_IN_WRITE"
_write_counts: dict[str, int] = {}


def _test_fault_hook(name: str) -> None:
    if _TEST_DELAY in os.environ:
        time.sleep(float(os.environ[_TEST_DELAY]))
    if _TEST_KILL in os.environ:
        target, _, nth = os.environ[_TEST_KILL].rpartition(":")
        _write_counts[name] = _write_counts.get(name, 0) + 1
        if target == name and _write_counts[name] == int(nth):
            os.kill(os.getpid(), signal.SIGKILL)


def _read_umask() -> int:
    mask = os.umask(0o022)  # (reading the umask means setting it: done once, at import)
    os.umask(mask)
    return mask


UMASK = _read_umask()  # public: iat.rundir.outdir creates its lock file with the same permissions


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, flush and fsync it, then rename over `path`.

    If anything fails (a full disk, Ctrl-C), the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600 files: give them the usual umask permissions
            os.fchmod(fd, 0o666 & ~UMASK)
        with os.fdopen(fd, "wb") as f:
            half = len(data) // 2
            f.write(data[:half])
            if _TEST_DELAY in os.environ or _TEST_KILL in os.environ:
                f.flush()
                _test_fault_hook(path.name)
            f.write(data[half:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def temp_files(folder: str | Path) -> list[Path]:
    """Temporary files a killed `atomic_write_bytes` left in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and TEMP_FILE.match(p.name))


def is_bookkeeping(path: str | Path) -> bool:
    """True for files that are no part of a run's content: the lock file and leftover temporaries.

    A directory holding only these counts as empty (a new or killed-before-writing run).
    """
    name = Path(path).name
    return name == LOCK or bool(TEMP_FILE.match(name))


def is_empty(folder: str | Path) -> bool:
    """True if `folder` holds nothing but bookkeeping (a lock file, a killed write's temporaries)."""
    return all(is_bookkeeping(p) and p.is_file() for p in Path(folder).iterdir())


def clean_temp_files(folder: str | Path) -> list[Path]:
    """Remove what `temp_files` finds; return the paths removed."""
    removed = temp_files(folder)
    for p in removed:
        p.unlink(missing_ok=True)
    return removed



# ------------------------------------------------------------------------------------------- JSON


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path} is missing: is {path.parent} a run directory written by `iat train`?")
    try:
        return json.loads(path.read_text())
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, a 5000-digit integer
        detail = (e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8 text" if isinstance(e, UnicodeError)
                  else "nested too deeply" if isinstance(e, RecursionError) else "a number too long")
        raise UsageError(f"{path} is not valid JSON ({detail}); the file is damaged: "
                         "restore it or train the run again") from None
    except OSError as e:
        raise UsageError(f"{path} cannot be read ({e.strerror or e})") from None
