"""Structure-preserving transformation of an input mesh (method note, section 4).

Object 0 of the set is the input mesh. Its corner e_0 is pinned to it: the shared DMTet grid is
initialised from the mesh's signed distance at *every* corner (so every object starts as the
input, in its pose), and a reconstruction loss on renders (mask, colour, normals, depth) holds e_0
to it, while the guide (SDS over the simplex edges, or target images) moves the other corners to
their prompts. Nothing else differs from a normal refine stage.

The input is normalised into the set's world frame: its bounding-box centre goes to the origin
and its largest half-extent to ``FILL * bound``. The inverse is kept so results can be mapped back
(``--keep-input-frame``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from a3d_mesh.export import ExportError, SetTransform, clean_mesh
from a3d_mesh.atomic import atomic_write_bytes
from a3d_mesh.errors import A3DMeshError
from a3d_mesh.run.folder import INPUT_COLORS, INPUT_FILE
from a3d_mesh.simplex import CodeSample
from a3d_mesh.meshio import SurfaceColors, load_colored_mesh
from a3d_mesh.train.guide import Guide, ImageTargetGuide, StepRender

FILL = 0.8  # largest half-extent of the normalised input, as a fraction of the scene cube
MAX_INPUT_FACES = 2_000_000
# Largest coordinate of an input, in its own units (so its size is at most twice that): far beyond
# any real unit, and it leaves float32 (GLB files, the map back of --keep-input-frame) headroom for
# edits that reach past the input's box to the scene cube's edge.
MAX_COORD = 1e30
# An input thinner than this fraction of its size along some axis is flat: even the finest tet
# grid (256 cells over the scene cube, 1/(256 * FILL) ~ 0.5% of the input's size) cannot hold it,
# and it has no inside to reconstruct (measured: a zero-thickness box, edited with the tiny preset,
# trained to an empty surface and failed at export).
FLAT = 1e-3
SUPPORTED = (".glb", ".gltf", ".obj", ".ply")


class EditInputError(A3DMeshError, ValueError):
    """An input mesh that cannot be used (one-line message)."""


@dataclass
class InputMesh:
    """The input in the set's frame: verts [V,3] float32, faces [F,3] int64, the map back to the
    input's own frame, what cleanup changed, and its colours (texture, vertex or face colours, in
    the set's frame) or None for an uncoloured input (reconstructed in a flat colour)."""

    verts: torch.Tensor
    faces: torch.Tensor
    to_input_frame: SetTransform
    repairs: dict[str, Any]
    colors: SurfaceColors | None = None


def prepare_input(path: str | Path, bound: float = 1.0, max_faces: int = MAX_INPUT_FACES) -> InputMesh:
    """Read, check, repair and normalise an input mesh; every failure is an :class:`EditInputError`."""
    p = Path(path)
    if p.suffix.lower() not in SUPPORTED:
        raise EditInputError(f"unsupported input mesh format '{p.suffix or p.name}' (use {', '.join(SUPPORTED)})")
    try:
        v, f, colors = load_colored_mesh(p)
    except ValueError as e:
        raise EditInputError(str(e)) from None
    if f.shape[0] > max_faces:
        raise EditInputError(f"input mesh {p} has {f.shape[0]} faces; decimate it below {max_faces} first")
    biggest = float(np.abs(v.numpy()).max(initial=0.0))
    if biggest > MAX_COORD:  # before cleanup (float32): a 1-unit box at 3e30 is welded to a point there
        raise EditInputError(f"input mesh {p} has coordinates too large (up to {biggest:.3g} in its units; "
                             f"at most {MAX_COORD:.0e}): scale it down first")
    try:
        # Every piece of the user's mesh is structure to keep (separate legs, handles): no debris rule.
        cv, cf, report = clean_mesh(v.numpy(), f.numpy(), min_component_area=0.0)
    except ExportError as e:  # only debris or degenerate faces: the input's fault, not an export's
        raise EditInputError(f"input mesh {p} cannot be used: {e}") from None
    if len(cf) == 0:
        raise EditInputError(f"input mesh {p} has no usable triangles after cleanup")
    cv = np.asarray(cv, dtype=np.float64)  # the box, centre and map back without float32 rounding
    lo, hi = _checked_box(cv, p)
    half = float((hi - lo).max()) / 2
    centre = (lo + hi) / 2
    s = FILL * bound / half
    verts = torch.from_numpy(((cv - centre) * s).astype(np.float32))
    back = SetTransform(scale=1.0 / s, translation=tuple(float(c) for c in centre), height_m=float(hi[1] - lo[1]),
                        convention="the input mesh's own frame and units (--keep-input-frame)")
    # Colours follow the verts' normalisation, in the points' own dtype (float32 downstream).
    colors = colors.transformed(centre.astype(colors.points.dtype), s) if colors is not None else None
    return InputMesh(verts, torch.from_numpy(np.asarray(cf, dtype=np.int64)), back, report, colors)


def _checked_box(verts: np.ndarray, p: Path) -> tuple[np.ndarray, np.ndarray]:
    """The bounding box (lo, hi) [3] of ``verts`` [V,3] float64 in the input's own units, once the
    mesh is known to be a usable solid: not a point, not flat."""
    lo, hi = verts.min(0), verts.max(0)
    extent = hi - lo
    if extent.max() <= 0:
        raise EditInputError(f"input mesh {p} is degenerate (zero size: every vertex at one point)")
    thin = int(np.argmin(extent))
    if extent[thin] <= FLAT * extent.max():
        raise EditInputError(f"input mesh {p} is flat ({extent[thin]:.3g} thick along {'xyz'[thin]}, {extent.max():.3g} "
                             f"across): a surface without thickness has no inside, so it cannot be reconstructed "
                             f"as a solid; give it thickness first")
    return lo, hi


def save_input(mesh: InputMesh, run_dir: Path) -> Path:
    """Write the normalised input (and its colours, if any) into the run folder (what training,
    resume and export read)."""
    import trimesh

    if mesh.colors is not None:
        buf = io.BytesIO()
        np.savez_compressed(buf, points=mesh.colors.points, colors=np.round(mesh.colors.colors * 255).astype(np.uint8))
        atomic_write_bytes(run_dir / INPUT_COLORS, buf.getvalue())
    buf = io.BytesIO()
    trimesh.Trimesh(mesh.verts.numpy(), mesh.faces.numpy(), process=False).export(buf, file_type="ply")
    return atomic_write_bytes(run_dir / INPUT_FILE, buf.getvalue())


def is_pinned(code: CodeSample) -> bool:
    """True for the input's own corner e_0."""
    return float(code.u[0]) == 1.0


class PinnedGuide:
    """Reconstruction of the input at e_0, the ``other`` guide everywhere else."""

    def __init__(self, pinned: ImageTargetGuide, other: Guide) -> None:
        self.pinned, self.other = pinned, other

    def flat_background(self, code: CodeSample) -> bool:
        return True if is_pinned(code) else self.other.flat_background(code)

    def __call__(self, r: StepRender, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        if is_pinned(r.code):
            loss, logs = self.pinned(r, generator)
            return loss, {"recon": logs["img"]}
        return self.other(r, generator)
