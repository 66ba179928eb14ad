"""Checkpoint files: atomic writes of plain state, safe loads, one-line errors.

Checkpoints hold only tensors and plain data (dicts, lists, tuples, numbers, strings, None) and
are loaded with ``torch.load(weights_only=True)``: a run folder from someone else cannot run
code. Every way a checkpoint can be unusable is a one-line :class:`CheckpointError` naming the file
and what to do. Written by training (:mod:`a3d_mesh.train.loop`), read by training (resume) and by
the run folder (:mod:`a3d_mesh.run`) for runs saved before models had their own folders.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import torch

from a3d_mesh.atomic import atomic_path
from a3d_mesh.errors import A3DMeshError, CheckpointError

T = TypeVar("T")


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
