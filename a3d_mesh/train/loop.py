"""The shared optimisation loop: steps, progress, atomic checkpoints, exact resume, Ctrl-C.

A *stage* is any object with ``name``, ``total_steps``, ``step(i) -> dict[str, float]``,
``state_dict()`` and ``load_state_dict()``. Its state must hold everything that influences later
steps (parameters, optimiser moments, the stage's random generator, buffers), so that a run
resumed from a checkpoint takes bit-for-bit the same steps as one that never stopped.

Ctrl-C (SIGINT) is deferred until the step in flight has finished: the loop then writes a
checkpoint of that consistent state and raises :class:`Interrupted`.

Checkpoints hold only tensors and plain data (dicts, lists, tuples, numbers, strings, None) and
are loaded with ``torch.load(weights_only=True)``: a run folder from someone else cannot run
code. Every way a checkpoint can be unusable is a one-line :class:`CheckpointError` naming the file
and what to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, TextIO, TypeVar

import numpy as np
import torch

from a3d_mesh.atomic import atomic_path
from a3d_mesh.errors import A3DMeshError, CheckpointError

T = TypeVar("T")


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
    """``torch.save`` of :func:`plain` ``obj`` that never leaves a half-written checkpoint behind.

    It writes through a Python file, so that a full disk keeps its ``OSError(ENOSPC)`` (torch's
    own writer reports only "unexpected pos"); :func:`a3d_mesh.atomic.atomic_path` names it.
    """
    data = plain(obj)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(data, fh)
            fh.flush()
            os.fsync(fh.fileno())


def plain(obj: Any) -> Any:
    """``obj`` as what ``torch.load(weights_only=True)`` accepts: tensors, dicts, lists, tuples,
    numbers, strings, None. numpy arrays and scalars become tensors and Python numbers, dataclasses
    dicts; anything else is a programming error (TypeError), caught here rather than at resume."""
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, torch.Tensor, torch.dtype, torch.device)):
        return obj
    if isinstance(obj, dict):  # keeps OrderedDict (module state dicts)
        return type(obj)((plain(k), plain(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return plain(dataclasses.asdict(obj))
    raise TypeError(f"checkpoint state holds a {type(obj).__name__}; convert it to tensors or plain data")


def _redo(path: Path) -> str:
    """What the user does about an unusable checkpoint ``path`` (resuming remakes what was deleted)."""
    if path.name == "refine.pt":
        source = "coarse.pt" if (path.parent / "coarse.pt").exists() else "the start"
        return f"delete it and --resume the run to redo the refine stage from {source}"
    if path.name == "coarse.pt":
        return "delete it and refine.pt, then --resume the run to train again from the start"
    return "delete it and re-make the run"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """``{"step": int, "stage": dict}`` from ``path``, loaded with ``weights_only=True``.

    Raises :class:`CheckpointError` (one line) for a file holding other objects (a crafted
    pickle, or an old checkpoint with Python objects: refused, never executed) and for a damaged
    one (truncated, empty, not a checkpoint). ``OSError`` (unreadable) passes through.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols: the error says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):  # it names a class or function to import: objects, not damage
            raise CheckpointError(f"checkpoint {path} holds objects other than tensors (made by an older a3d-mesh or "
                                  f"by someone else); it was not loaded: re-make the run") from None
        state = None
    except OSError:
        raise
    except Exception:  # torch reports damage as RuntimeError, EOFError, KeyError... depending on where it broke
        state = None
    if not (isinstance(state, dict) and isinstance(state.get("step"), int) and isinstance(state.get("stage"), dict)):
        what = "is empty" if path.stat().st_size == 0 else "is damaged (truncated or not an a3d-mesh checkpoint)"
        raise CheckpointError(f"checkpoint {path} {what}; {_redo(path)}")
    return state


def restore(path: Path, apply: Callable[[], T]) -> T:
    """Run ``apply`` (which loads the state read from checkpoint ``path`` into modules); a state
    that does not fit them (another config's shapes, missing parts) is one :class:`CheckpointError`."""
    try:
        return apply()
    except A3DMeshError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(":")
        raise CheckpointError(f"checkpoint {path} does not fit the run's config.yaml ({why}); {_redo(path)}") from None


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
