"""The one exception type the export package raises for user-facing problems."""

from __future__ import annotations


class ExportError(RuntimeError):
    """A user-facing export failure (empty mesh, missing ``blender``, missing ``usd-core``, ...).

    The message is one line and says what to do; callers (the CLI) print it without a traceback.
    """
