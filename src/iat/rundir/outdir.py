"""Output directories: a path checked before anything is created, the directory created, and held by one
writer at a time.

A command that writes a directory holds `lock_dir` on it: an OS file lock on `.iat.lock` inside it,
which the kernel drops when the process ends, however it ends, so a second writer is refused while
the first runs and a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: directories are not locked
    fcntl = None  # type: ignore[assignment]

from iat.errors import UsageError
from iat.rundir import files

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
    lock = path / files.LOCK
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666 & ~files.UMASK)
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
    lock is released by the kernel; its lock file stays and is ignored (`files.is_bookkeeping`).
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
            os.unlink(path / files.LOCK)  # while still locked, so no one locks the old file afterwards
        os.close(fd)
        _remove_empty(created)


def _remove_empty(created: list[Path]) -> None:
    """Remove the directories `lock_dir` created (deepest first) as long as they are empty."""
    for p in created:
        try:
            p.rmdir()
        except OSError:
            return  # not empty (the command wrote files, or another process uses it): keep it
