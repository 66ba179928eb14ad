"""Atomic file writes: a temp file in the destination's directory, then ``os.replace``.

``os.replace`` is atomic on POSIX and Windows when source and destination are on the same file
system, which is why the temp file lives next to the destination rather than in ``/tmp``. A
failure at any point removes the temp file, so readers see either the old file or the new one,
never a half-written one.

A full disk is reported the same way whichever writer hit it: some (``torch.save``) wrap the
``OSError`` in a ``RuntimeError``; :func:`atomic_path` re-raises those as ``OSError(ENOSPC)``
naming the destination, which the CLI turns into one line.

Permissions: ``tempfile.mkstemp`` creates its file 0600 whatever the umask, so every output would
be unreadable to a web server or a teammate. Before the rename the file gets the mode a plain
``open()`` would have given it, ``0o666 & ~umask``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _read_umask_by_swap() -> int:
    """The umask via ``os.umask``, which can only read it by setting it: briefly 0, then restored.
    Done once, at import (normally before any thread starts), since a thread creating a file
    during that window would get mode 0666."""
    old = os.umask(0)
    os.umask(old)
    return old


_IMPORT_UMASK = _read_umask_by_swap()


def current_umask() -> int:
    """The process's umask now: from ``/proc/self/status`` where Linux offers it (a read, no race,
    and it follows later ``os.umask`` calls), else the value read at import."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _IMPORT_UMASK


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temp path next to ``dest``; on normal exit move it onto ``dest`` atomically.

    Use when a library (PIL, Blender, usd-core) insists on writing to a path itself. The temp
    name keeps the destination's suffix because some writers pick the format from it. Parent
    directories are created. If the body raises, or leaves no file behind, ``dest`` is untouched;
    a failure caused by a full disk surfaces as ``OSError(ENOSPC, ..., dest)``. The file ends with
    mode ``0o666 & ~umask``, as if written by ``open()``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{dest.suffix}", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise OSError(f"writer produced no data for {dest}")
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp made it 0600; see the module docstring
        os.replace(tmp, dest)
    except Exception as e:
        if is_disk_full(e):  # name the destination, not our temp file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dest)) from e
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` or an exception it was raised from or during is a full disk (ENOSPC, EDQUOT)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def atomic_write_bytes(dest: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``dest`` atomically (flushed and fsynced before the rename); return ``dest``."""
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return dest


def atomic_write_text(dest: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``dest`` atomically; return ``dest``."""
    return atomic_write_bytes(dest, text.encode("utf-8"))
