"""The shared optimisation loop: steps, progress, atomic checkpoints, exact resume, Ctrl-C.

A *stage* is any object with ``name``, ``total_steps``, ``step(i) -> dict[str, float]``,
``state_dict()`` and ``load_state_dict()``. Its state must hold everything that influences later
steps (parameters, optimiser moments, the stage's random generator, buffers), so that a run
resumed from a checkpoint takes bit-for-bit the same steps as one that never stopped.

Ctrl-C (SIGINT) is deferred until the step in flight has finished: the loop then writes a
checkpoint of that consistent state and raises :class:`Interrupted`. Checkpoint files themselves
(plain data, ``weights_only`` loads, one-line errors) are :mod:`a3d_mesh.checkpoint`'s.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path
from typing import Any, Iterator, Protocol

from a3d_mesh.checkpoint import atomic_torch_save, load_checkpoint, restore
from a3d_mesh.progress import Progress


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
        restore(checkpoint, lambda: stage.load_state_dict(state["stage"]))
        start = state["step"]
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
