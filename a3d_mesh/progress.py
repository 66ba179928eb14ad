"""Progress of long work: stage, step/total, losses, speed and ETA.

One rewritten line on a TTY, plain log lines otherwise (CI logs, files). Used by training, export,
hybrids and batches alike, so it lives outside :mod:`a3d_mesh.train`.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Stage, step/total, losses, speed and ETA: one rewritten line on a TTY, log lines otherwise."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None, every_s: float = 10.0) -> None:
        self.quiet, self.stream, self.every_s = quiet, stream or sys.stderr, every_s
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._t0: float | None = None
        self._s0 = 0
        self._last_print = 0.0
        self._stage = ""

    def message(self, text: str) -> None:
        """A one-off line (stage starts, choices made, files written)."""
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def start(self, stage: str, first_step: int, total: int) -> None:
        self._t0, self._s0, self._stage, self._last_print = time.monotonic(), first_step, stage, 0.0
        self.message(f"[{stage}] {'resuming at' if first_step else 'starting'} step {first_step}/{total}")

    def update(self, step: int, total: int, logs: dict[str, float]) -> None:
        if self.quiet or self._t0 is None:
            return
        now = time.monotonic()
        done = step - self._s0
        rate = done / max(now - self._t0, 1e-9)
        eta = (total - step) / rate if rate > 0 else float("inf")
        loss = " ".join(f"{k} {v:.4g}" for k, v in list(logs.items())[:3])
        line = f"[{self._stage}] {step}/{total} {loss} | {rate:.2f} it/s ETA {_fmt_time(eta)}"
        if self.tty:
            self.stream.write("\r\033[K" + line)
            if step == total:
                self.stream.write("\n")
            self.stream.flush()
        elif step == total or now - self._last_print >= self.every_s or step == self._s0 + 1:
            self._last_print = now
            self.stream.write(line + "\n")
            self.stream.flush()


def _fmt_time(s: float) -> str:
    if s == float("inf"):
        return "?"
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
