"""One process per run folder: an advisory lock on ``RUN_DIR/.a3d-mesh.lock``.

The lock is ``fcntl.flock`` on an open file, so the kernel drops it when the holder exits in any
way (Ctrl-C, SIGKILL, a crash): a lock file left behind by a dead process is simply locked again,
with no staleness guess. The file holds the holder's pid, host and start time for the message a
second process gets. It stays in the folder afterwards and doubles as the mark of an a3d-mesh run
(runs made before it existed are recognised by ``config.yaml`` + ``prompts.txt`` + ``checkpoints/``).

The lock is re-entrant within one process (``edit`` prepares a folder, then resumes it as a run).
flock is per host on most network file systems; two machines sharing a folder are not guarded.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TypeVar

from a3d_mesh.errors import RunDirInUse, RunError

T = TypeVar("T")
LOCK_FILE = ".a3d-mesh.lock"
_held: dict[Path, list] = {}  # resolved run folder -> [open lock file, depth]


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a folder an a3d-mesh run owns (new runs: the lock file; older ones: their files)."""
    path = Path(path)
    if (path / LOCK_FILE).is_file():
        return True
    return (path / "config.yaml").is_file() and (path / "prompts.txt").is_file() and (path / "checkpoints").is_dir()


def check_new_run_dir(out: Path) -> None:
    """Refuse an ``--out`` that a new run must not write into: a file, or a non-empty folder that
    is not an a3d-mesh run (the user's own files would be overwritten). Writes nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file; give a folder (new, empty, or an a3d-mesh run)")
    if out.is_dir() and any(out.iterdir()) and not is_run_dir(out):
        raise RunError(f"--out {out} is a folder that is not empty and not an a3d-mesh run; nothing was written: "
                       f"choose a new or empty folder")


@contextlib.contextmanager
def run_lock(run_dir: Path, new: bool = False) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the duration of the block.

    ``new``: a run is about to be started there: the folder is checked (:func:`check_new_run_dir`)
    and created. Otherwise a folder that is not a run is left alone (not even a lock file is
    written); the caller reports what is missing, and so is a run we may not write to (exporting
    from a read-only share elsewhere). Raises :class:`RunDirInUse` (one line) when another live
    process holds the lock.
    """
    run_dir = Path(run_dir)
    if new:
        check_new_run_dir(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    elif not is_run_dir(run_dir):
        yield
        return
    key = run_dir.resolve()
    if key in _held:
        _held[key][1] += 1
    else:
        fh = _acquire(run_dir)
        if fh is None:  # a folder we may not write to (read-only share): we cannot change it either
            yield
            return
        _held[key] = [fh, 1]
    try:
        yield
    finally:
        _held[key][1] -= 1
        if _held[key][1] == 0:
            _held.pop(key)[0].close()  # closing the file releases the flock


def under_lock(run_dir: Path, fn: Callable[[], T]) -> T:
    """``fn()`` while holding the lock of the existing run ``run_dir`` (see :func:`run_lock`)."""
    with run_lock(run_dir):
        return fn()


def _acquire(run_dir: Path) -> IO[str] | None:
    """The open, locked lock file; None when the folder is read-only to us."""
    import fcntl  # POSIX; imported here so that merely importing this module works everywhere

    path = run_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return None
        raise
    fh = open(fd, "r+", encoding="utf-8")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = _describe(fh.read())
        fh.close()
        raise RunDirInUse(f"{run_dir} is in use by another a3d-mesh process ({owner}); wait for it to end "
                          f"or choose another folder") from None
    except BaseException:
        fh.close()
        raise
    fh.seek(0)
    fh.truncate()
    since = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}) + "\n")
    fh.flush()
    return fh


def _describe(text: str) -> str:
    """'pid N on HOST since T' from the lock file's record (the holder may not have written it yet)."""
    try:
        rec = json.loads(text)
        return f"pid {int(rec['pid'])} on {rec['host']} since {rec['since']}"
    except (ValueError, KeyError, TypeError):
        return "holder still starting"
