"""The set's export transform: one scale and one translation shared by every asset of a set.

Convention (what keeps an exported set aligned):

* Axes are kept: the set's world frame is already right-handed, +Y up, which is glTF's frame,
  so no rotation is applied.
* One uniform scale for the whole set: the union of all objects spans ``height_m`` metres along
  +Y (so the tallest object is at most ``height_m`` tall and all keep their relative sizes).
* One translation for the whole set: the lowest point of the whole set goes to y = 0, so the
  set stands on the ground plane y = 0 (an object whose lowest point is above the set's lowest
  point keeps that gap, which is part of the alignment; grounding, below, moves it to its own
  file's y = 0 and records the gap). x and z are not translated: the set's
  shared vertical axis x = z = 0 stays the vertical axis of every exported file. Objects are
  deliberately *not* centred on their own bounding boxes, which would shift them relative to
  each other and break the alignment.

Grounding each asset (``export.ground: each``, the default; :func:`grounded`): engines expect an
asset's base at y = 0 with its pivot under it, so each asset (object or hybrid) is additionally
shifted along y alone until its *own* lowest point is on y = 0. Scale, x and z stay the set's, so
the assets still share one vertical axis and one size. The shift is the asset's
``ground_offset_m`` (metres, recorded in its manifest entry)::

    y_file = y_set + ground_offset_m        (x_file = x_set, z_file = z_set)
    y_set  = y_file - ground_offset_m       (reassembles the set exactly)

where ``y_set`` is the set transform's output. An asset floating 14 cm above the set's lowest
point has ``ground_offset_m = -0.14``; one reaching below it (a hybrid) a positive offset.
``export.ground: set`` applies the set transform alone (every offset 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .errors import ExportError

ArrayLike = np.ndarray | torch.Tensor

CONVENTION = (
    "world frame kept (+Y up, right-handed, metres); one uniform scale for the set so its union "
    "is height_m tall; one translation (0, t_y, 0) putting the set's lowest point on y = 0; "
    "shared vertical axis x = z = 0 kept"
)


def as_numpy(x: ArrayLike, dtype: type) -> np.ndarray:
    """Return ``x`` (tensor on any device, or array) as a contiguous numpy array of ``dtype``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x), dtype=dtype)


@dataclass(frozen=True)
class SetTransform:
    """``x_export = scale * x_world + translation`` for every vertex of every asset of a set.

    ``scale`` is metres per world unit; ``translation`` is ``[3]`` metres, always ``(0, t_y, 0)``
    when built by :func:`set_transform`.
    """

    scale: float
    translation: tuple[float, float, float]
    height_m: float = 1.0
    convention: str = field(default=CONVENTION)

    def apply(self, verts: ArrayLike) -> np.ndarray:
        """Map world-frame ``verts [V,3]`` to export-frame metres; returns float32 ``[V,3]``."""
        v = as_numpy(verts, np.float64)
        return (v * self.scale + np.asarray(self.translation, np.float64)).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record for the manifest."""
        return {
            "scale": float(self.scale),
            "translation": [float(t) for t in self.translation],
            "height_m": float(self.height_m),
            "convention": self.convention,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SetTransform:
        """Inverse of :meth:`to_dict`."""
        t = d["translation"]
        return cls(
            scale=float(d["scale"]),
            translation=(float(t[0]), float(t[1]), float(t[2])),
            height_m=float(d.get("height_m", 1.0)),
            convention=str(d.get("convention", CONVENTION)),
        )


IDENTITY = SetTransform(scale=1.0, translation=(0.0, 0.0, 0.0))

GROUNDED = "; then each asset shifted along y alone so its own lowest point is on y = 0 (ground_offset_m)"


def grounded(transform: SetTransform, verts: ArrayLike) -> tuple[SetTransform, float]:
    """The set's ``transform`` shifted along y so that ``verts`` (one asset) stands on y = 0.

    Args:
        transform: the set's transform (scale and x/z are kept as they are).
        verts: ``[V,3]`` world-frame vertices of the one asset, those it will be exported with
            (after debris removal), so that its written lowest point is the one put on y = 0.

    Returns:
        ``(asset_transform, ground_offset_m)``: ``asset_transform.translation`` is
        ``transform.translation + (0, ground_offset_m, 0)``; the offset is in metres (see the
        module docstring for how it reassembles the set).

    Raises:
        ExportError: no vertices, or a non-finite one.
    """
    y = as_numpy(verts, np.float64).reshape(-1, 3)[:, 1]
    if y.size == 0:
        raise ExportError("cannot ground an asset with no vertices")
    if not np.isfinite(y).all():
        raise ExportError("cannot ground an asset: non-finite vertex coordinates")
    tx, ty, tz = transform.translation
    # Same arithmetic as apply() (float64, scale then translation), so the lowest point maps to 0.
    offset = 0.0 - float(y.min() * transform.scale + ty)  # not -x: no "-0.0" in the manifest
    shifted = SetTransform(scale=transform.scale, translation=(tx, ty + offset, tz), height_m=transform.height_m,
                           convention=transform.convention + GROUNDED)
    return shifted, offset


def set_transform(vertex_arrays: Sequence[ArrayLike], height_m: float = 1.0) -> SetTransform:
    """Build the one transform of a set from all its objects' world-frame vertices.

    Args:
        vertex_arrays: one ``[V_i, 3]`` array per object of the set (prompts and hybrids), world
            frame. Empty arrays are ignored.
        height_m: height in metres of the set's union along +Y.

    Raises:
        ExportError: no vertices at all, a non-finite vertex, or a flat set (zero height).
    """
    if height_m <= 0:
        raise ExportError(f"height_m must be positive, got {height_m}")
    ys = [as_numpy(v, np.float64).reshape(-1, 3)[:, 1] for v in vertex_arrays]
    ys = [y for y in ys if y.size]
    if not ys:
        raise ExportError("cannot build the set transform: the set has no vertices")
    y = np.concatenate(ys)
    if not np.isfinite(y).all():
        raise ExportError("cannot build the set transform: non-finite vertex coordinates")
    y_min, y_max = float(y.min()), float(y.max())
    if y_max - y_min <= 1e-12:
        raise ExportError("cannot build the set transform: the set is flat (zero height)")
    scale = height_m / (y_max - y_min)
    return SetTransform(scale=scale, translation=(0.0, -scale * y_min, 0.0), height_m=height_m)
