"""Files of a run directory, written atomically and read without executing code.

Weights are safetensors; configuration and results are JSON; the resumable training state is a
`torch.save` dict of tensors and plain values, read back with `weights_only=True`, which refuses
any pickled object that is not a tensor or a plain container. Nothing in a run directory can run
code when it is loaded.

Every file is written to a temporary file beside its target (`.NAME.XXXX.tmp`), flushed and
fsynced, then renamed over the target: a crash at any moment leaves either the old file or the new
one, never half of one. A temporary file left by a killed process is ignored by every reader and
removed by `clean_temp_files` when the run is resumed.

A command that writes a directory holds `lock_dir` on it: an OS file lock on `.iat.lock` inside it,
which the kernel drops when the process ends, however it ends, so a second writer is refused while
the first runs and a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pickle
import re
import shlex
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: directories are not locked
    fcntl = None  # type: ignore[assignment]

import torch
from safetensors import SafetensorError
from safetensors.torch import load, load_file, save

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


_UMASK = _read_umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, flush and fsync it, then rename over `path`.

    If anything fails (a full disk, Ctrl-C), the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600 files: give them the usual umask permissions
            os.fchmod(fd, 0o666 & ~_UMASK)
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


NAME_MAX, PATH_MAX = 255, 4096  # bytes: Linux's limits for one file name and for a whole path


def check_path(path: str | Path, what: str = "--out") -> Path:
    """Refuse a path no file system accepts: empty (it would mean the current directory), holding a NUL
    byte, a file name over NAME_MAX bytes or a path over PATH_MAX. The OS would say so only with an
    OSError (ENAMETOOLONG) from whichever call came first, a traceback."""
    text = os.fspath(path)
    if isinstance(text, str) and not text.strip():
        raise UsageError(f"{what} is empty; give a directory path (`.` for the current directory)")
    raw = os.fsencode(text)
    if b"\0" in raw:
        raise UsageError(f"{what} {text!r} holds a NUL byte, which no file name may contain; choose another path")
    longest = max(raw.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        raise UsageError(f"{what} {_short_path(text)}: a name in it is {len(longest)} bytes long, more than the "
                         f"{NAME_MAX} a file name may have; choose a shorter path")
    if len(os.fsencode(os.path.abspath(text))) >= PATH_MAX:
        raise UsageError(f"{what} {_short_path(text)}: the path is longer than the {PATH_MAX} bytes a path may "
                         "have; choose a shorter path")
    return Path(path)


def _short_path(text: str) -> str:
    return text if len(text) <= 80 else text[:40] + "..." + text[-37:]


def check_out_dir(path: str | Path, option: str = "--out") -> Path:
    """Refuse an output path that cannot become a directory, before anything is created.

    The path may exist (as a directory) or not; its nearest existing ancestor must be a writable
    directory. Raises UsageError naming the path and the fix.
    """
    path = check_path(path, option)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} exists and is not a directory; choose a directory path")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{option} {path}: {probe} is a file, not a directory; choose another path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: {probe} is not writable; choose a directory you can write to")
    return path


def make_dir(path: str | Path, option: str = "--out") -> Path:
    """`mkdir -p`, with a failure (read-only file system, permissions) as a one-line UsageError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{option} {path} cannot be created ({e.strerror or e}); choose another directory") from None
    return path


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


# ---------------------------------------------------------------------------------------- weights


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor]) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    atomic_write_bytes(path, save(tensors))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path} is missing: the run has not finished training; finish it with "
                         "`iat train ... --resume` (same options)")
    try:
        if _is_utf8(path):
            state = load_file(str(path))
        else:  # safetensors opens only UTF-8 paths; Python opens any
            state = load(path.read_bytes())
    except Exception as e:  # safetensors raises SafetensorError, OSError, or ValueError on bad headers
        kind = "damaged" if isinstance(e, (SafetensorError, OSError, ValueError)) else "unreadable"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise UsageError(f"{path} is not a valid safetensors file ({first}); the file is {kind}: "
                         "restore it or train the run again") from None
    check_finite_state(state, path)
    return state


def _is_utf8(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes of the file name, kept by Python as surrogates
        return False
    return True


def check_finite_state(state: dict[str, Any], path: str | Path) -> None:
    """Refuse weights that cannot be a trained model: NaN or inf anywhere, or a negative BatchNorm
    variance. Such a model scores as "88% error" or passes gradient checks by accident; it is damage
    (a diverged run or a corrupted file), and no number computed from it means anything.

    Raises UsageError naming `path` and the first bad tensor.
    """
    fix = "restore the file or train the run again"
    for name, t in state.items():
        if not isinstance(t, torch.Tensor) or not (t.is_floating_point() or t.is_complex()):
            continue
        if not bool(torch.isfinite(t).all()):
            kind = "NaN" if bool(torch.isnan(t).any()) else "infinite"
            raise UsageError(f"{path} holds {kind} values in {name}; the weights are unusable: {fix}")
        if name.endswith("running_var") and bool((t < 0).any()):
            raise UsageError(f"{path} holds a negative BatchNorm variance in {name} ({float(t.min()):.3g}); "
                             f"the weights are unusable: {fix}")


# ------------------------------------------------------------------------------------- checkpoint


def save_checkpoint(path: str | Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict:
    """Load a training checkpoint; anything but tensors and plain containers is refused.

    Raises UsageError (one line) for a missing, damaged or unsafe file; no code in it ever runs.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path} is missing")
    fix = f"delete {path} to restart the run from scratch, or restore the file"
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            with open(path, "rb") as f:  # Python opens any path; torch.load(str) fails on non-UTF-8 names
                state = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"(unsupported GLOBAL \S+|Unsupported operand \d+|Unsupported class \S+)", str(e))
        what = found.group(1) if found else "objects other than tensors"
        raise UsageError(f"{path} was refused for safety: it holds code, not just tensors ({what}); {fix}") from None
    except Exception as e:  # torch.load raises RuntimeError, EOFError, IndexError, ... on damaged files
        raise UsageError(f"{path} is not a readable checkpoint ({type(e).__name__}); the file is damaged; "
                         f"{fix}") from None
    if not isinstance(state, dict):
        raise UsageError(f"{path} is not an iat checkpoint (a {type(state).__name__}, not a dict); {fix}")
    return state


# ------------------------------------------------------------------------------------------- lock

_held: dict[Path, tuple[int, int]] = {}  # directories locked here -> (pid, nesting depth); a forked
# child inherits this table but is another process, so the pid tells whether the entry is its own


def _command_line() -> str:
    argv = list(sys.argv) or ["python"]
    argv[0] = "iat" if Path(argv[0]).name in ("__main__.py", "iat") else Path(argv[0]).name
    line = shlex.join(argv)
    return line if len(line) <= 80 else line[:77] + "..."


def _holder(lock: Path) -> str:
    """'process PID (COMMAND)' from the lock file, as far as the holder has written it."""
    try:
        pid, _, cmd = lock.read_text(errors="replace").partition("\n")
    except OSError:
        pid, cmd = "", ""
    pid, cmd = pid.strip(), cmd.strip()
    if not pid.isdigit():
        return "another process"
    return f"process {pid}" + (f" ({cmd})" if cmd else "")


def _acquire(path: Path, what: str) -> int:
    """Open and flock `path/.iat.lock`; return its descriptor. The file at the path must still be the
    one locked: a releasing holder unlinks it, and a lock on an unlinked file protects nothing."""
    lock = path / LOCK
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666 & ~_UMASK)
        except FileNotFoundError:  # the directory was removed by a releasing holder that created it
            path.mkdir(parents=True, exist_ok=True)
            continue
        except OSError as e:
            raise UsageError(f"{what} {path} cannot be locked for writing ({e.strerror or e}); "
                             "choose a directory you can write to") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UsageError(f"{what} {path} cannot be locked ({e.strerror or e})") from None
            raise UsageError(f"{what} {path} is in use by {_holder(lock)}; "
                             "wait for it to finish or stop it") from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # locked a file its holder had just unlinked: try again on the new one


@contextlib.contextmanager
def lock_dir(path: str | Path, what: str = "run directory") -> Iterator[Path]:
    """Hold an exclusive lock on directory `path` (created if absent) while the block runs.

    A second process (or a second `lock_dir` from a forked child) gets a UsageError naming the
    holder: "{what} PATH is in use by process 1234 (iat train ...); wait for it to finish or stop it".
    Nested `lock_dir` calls on one directory within one process share the lock. On exit the lock
    file is removed, and so are the directories this call created if nothing else was put in them,
    so a command refused inside the block leaves the file system as it found it. A killed holder's
    lock is released by the kernel; its lock file stays and is ignored (`is_bookkeeping`).
    """
    path = Path(path)
    key = Path(os.path.abspath(path))
    pid = os.getpid()
    if fcntl is None or _held.get(key, (0, 0))[0] == pid:
        depth = _held.get(key, (pid, 0))[1]
        _held[key] = (pid, depth + 1)
        try:
            yield path
        finally:
            if depth:
                _held[key] = (pid, depth)
            else:
                del _held[key]
        return
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} exists and is not a directory; choose a directory path")
    created = [p for p in [path, *path.parents] if not p.exists()]
    make_dir(path, what)
    try:
        fd = _acquire(path, what)
    except BaseException:
        _remove_empty(created)
        raise
    _held[key] = (pid, 1)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{pid}\n{_command_line()}\n".encode(errors="replace"))
    except OSError:
        pass  # a full disk: the lock holds all the same, only the holder's name is missing
    try:
        yield path
    finally:
        del _held[key]
        with contextlib.suppress(OSError):
            os.unlink(path / LOCK)  # while still locked, so no one locks the old file afterwards
        os.close(fd)
        _remove_empty(created)


def _remove_empty(created: list[Path]) -> None:
    """Remove the directories `lock_dir` created (deepest first) as long as they are empty."""
    for p in created:
        try:
            p.rmdir()
        except OSError:
            return  # not empty (the command wrote files, or another process uses it): keep it
