"""The shared optimisation loop: steps, progress, atomic checkpoints, exact resume, Ctrl-C.

A *stage* is any object with ``name``, ``total_steps``, ``step(i) -> dict[str, float]``,
``state_dict()`` and ``load_state_dict()``. Its state must hold everything that influences later
steps (parameters, optimiser moments, the stage's random generator, buffers), so that a run
resumed from a checkpoint takes bit-for-bit the same steps as one that never stopped.

Ctrl-C (SIGINT) is deferred until the step in flight has finished: the loop then writes a
checkpoint of that consistent state and raises :class:`Interrupted`.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Protocol, TextIO

import torch

from a3d_mesh.atomic import atomic_path


class Interrupted(KeyboardInterrupt):
    """Raised after a Ctrl-C once the checkpoint of the last finished step is on disk."""

    def __init__(self, checkpoint: Path, step: int) -> None:
        super().__init__(f"interrupted at step {step}; checkpoint {checkpoint}")
        self.checkpoint, self.step = checkpoint, step


class Stage(Protocol):
    name: str
    total_steps: int

    def step(self, i: int) -> dict[str, float]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` that never leaves a half-written checkpoint behind."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


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


@contextlib.contextmanager
def deferred_sigint() -> Iterator[list[bool]]:
    """Turn SIGINT into a flag for the duration (main thread only); yields the one-element flag list."""
    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag[0]:  # a second Ctrl-C aborts at once
            raise KeyboardInterrupt
        flag[0] = True

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, old)


def run_stage(stage: Stage, checkpoint: Path, every: int, progress: Progress | None = None,
              resume: bool = True) -> None:
    """Run ``stage`` to its last step, checkpointing every ``every`` steps and at the end.

    With ``resume`` and an existing checkpoint the stage continues from the saved step.
    """
    progress = progress or Progress(quiet=True)
    start = 0
    if resume and checkpoint.exists():
        state = load_checkpoint(checkpoint)
        stage.load_state_dict(state["stage"])
        start = int(state["step"])
    total = stage.total_steps
    if start >= total:
        return

    def save(step: int) -> None:
        atomic_torch_save({"step": step, "stage": stage.state_dict()}, checkpoint)

    with deferred_sigint() as interrupted:
        progress.start(stage.name, start, total)  # after the handler is in place: Ctrl-C from here is safe
        for i in range(start, total):
            logs = stage.step(i)
            progress.update(i + 1, total, logs)
            if (i + 1) % every == 0 or i + 1 == total or interrupted[0]:
                save(i + 1)
            if interrupted[0]:
                raise Interrupted(checkpoint, i + 1)
