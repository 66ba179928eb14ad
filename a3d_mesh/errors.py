"""The errors a user can cause or meet, each with a one-line ``str()`` and the CLI's exit code.

``exit_code``: 2 bad input (prompt file, flags, hybrid spec, run folder, checkpoint), 1 a failure
while working (training collapsed). The CLI maps every :class:`A3DMeshError` with this code, so a new
error needs no change there. Existing names (``PromptError``, ``HybridError``, ``RunError``) subclass it.
"""

from __future__ import annotations


class A3DMeshError(Exception):
    """Base of the one-line errors the CLI reports without a traceback."""

    exit_code: int = 2


def first_line(exc: BaseException | str) -> str:
    """One line for a message: a string's first non-blank line; an exception's as
    ``"Type: first line"`` (a library's type often says most), or just its first line when it is one
    of ours (:class:`A3DMeshError`, already worded for the user)."""
    if isinstance(exc, str):
        text = exc
    else:
        message = str(exc).strip()
        text = message if isinstance(exc, A3DMeshError) else (
            f"{type(exc).__name__}: {message}" if message else type(exc).__name__)
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


class RunError(A3DMeshError, RuntimeError):
    """A run folder that cannot be used (one-line message)."""


class CheckpointError(RunError):
    """A checkpoint that cannot be loaded: damaged, foreign objects, or another run's shapes."""


class RunDirInUse(RunError):
    """Another live a3d-mesh process holds the run folder's lock."""


class TrainingFailed(RunError):
    """Training ran but produced nothing usable (e.g. an empty surface): a failure, not bad input."""

    exit_code = 1
