"""Mesh cleanup before unwrapping: weld, drop debris and degenerate faces, repair, decimate.

Marching-tetrahedra meshes typically carry tiny floating blobs, zero-area slivers and the odd
non-manifold edge where two sheets touch; xatlas and game engines both dislike those. pymeshlab
(MeshLab's filters) does the work; this module counts what each step changed for the manifest.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pymeshlab

from .errors import ExportError
from .frame import ArrayLike, as_numpy


def validate_mesh(verts: ArrayLike, faces: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert a mesh to numpy ``(verts [V,3] float64, faces [F,3] int64)``.

    Raises:
        ExportError: empty mesh, wrong shapes, non-finite vertices or out-of-range indices.
    """
    v = as_numpy(verts, np.float64)
    f = as_numpy(faces, np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ExportError(f"mesh must be verts [V,3] and faces [F,3], got {v.shape} and {f.shape}")
    if v.shape[0] == 0 or f.shape[0] == 0:
        raise ExportError("mesh is empty (no vertices or no faces): nothing to export")
    if not np.isfinite(v).all():
        raise ExportError("mesh has non-finite vertex coordinates")
    if f.min() < 0 or f.max() >= v.shape[0]:
        raise ExportError(f"face indices out of range [0, {v.shape[0]})")
    return v, f


def _counts(ms: pymeshlab.MeshSet) -> tuple[int, int]:
    m = ms.current_mesh()
    return m.vertex_number(), m.face_number()


def _step(ms: pymeshlab.MeshSet, report: dict[str, Any], key: str, filt: str, **kw: Any) -> None:
    """Run one pymeshlab filter and record ``{key: {vertices_removed, faces_removed}}``."""
    v0, f0 = _counts(ms)
    getattr(ms, filt)(**kw)
    v1, f1 = _counts(ms)
    report["steps"][key] = {"vertices_removed": v0 - v1, "faces_removed": f0 - f1}


def decimate(
    verts: np.ndarray, faces: np.ndarray, target_faces: int
) -> tuple[np.ndarray, np.ndarray]:
    """Quadric edge-collapse decimation to about ``target_faces`` faces (no-op if already below).

    Args / returns: numpy ``verts [V,3]``, ``faces [F,3]``; returns float32 / int64 arrays.
    """
    if faces.shape[0] <= target_faces:
        return verts.astype(np.float32), faces.astype(np.int64)
    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(vertex_matrix=verts.astype(np.float64), face_matrix=faces.astype(np.int32)))
    # Normal preservation stops collapses that flip faces; planar quadrics keep flat areas stable.
    ms.meshing_decimation_quadric_edge_collapse(
        targetfacenum=int(target_faces), preservenormal=True, planarquadric=True, autoclean=True
    )
    m = ms.current_mesh()
    return m.vertex_matrix().astype(np.float32), m.face_matrix().astype(np.int64)


def apply_face_budget(
    verts: np.ndarray, faces: np.ndarray, target_faces: int | None, report: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Decimate to ``target_faces`` when it is given and exceeded; record it in ``report["decimated"]``.

    Also refreshes ``report["output"]``. Returns float32 / int64 numpy arrays.

    Raises:
        ExportError: a budget under 4 faces.
    """
    if target_faces is not None and faces.shape[0] > target_faces:
        if target_faces < 4:
            raise ExportError(f"face budget {target_faces} is too small (need at least 4)")
        n0 = int(faces.shape[0])
        verts, faces = decimate(verts, faces, target_faces)
        report["decimated"] = {"from_faces": n0, "to_faces": int(faces.shape[0]), "target": int(target_faces)}
    report["output"] = {"vertices": int(verts.shape[0]), "faces": int(faces.shape[0])}
    return verts.astype(np.float32), faces.astype(np.int64)


def clean_mesh(
    verts: ArrayLike,
    faces: ArrayLike,
    merge_tol: float = 1e-6,
    min_component_frac: float = 0.005,
    target_faces: int | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Clean a world-frame triangle mesh for export.

    Steps, in order: merge vertices closer than ``merge_tol`` x bbox diagonal; remove faces that
    repeat a vertex, duplicate faces and zero-area faces; drop connected components with fewer
    than ``min_component_frac`` x F faces (floating debris; the largest component always stays);
    remove faces on non-manifold edges and split non-manifold vertices; drop unreferenced
    vertices; then, if ``target_faces`` is given and exceeded, quadric decimation to it.

    Args:
        verts: ``[V,3]`` float, world frame (tensor on any device or array).
        faces: ``[F,3]`` int, counter-clockwise seen from outside.
        merge_tol: weld distance as a fraction of the bounding-box diagonal.
        min_component_frac: components smaller than this fraction of all faces are dropped.
        target_faces: optional face budget.

    Returns:
        ``(verts [V',3] float32, faces [F',3] int64, report)`` as numpy; ``report`` holds the
        input/output counts and per-step ``vertices_removed`` / ``faces_removed``.

    Raises:
        ExportError: invalid input, or nothing left after cleanup.
    """
    v, f = validate_mesh(verts, faces)
    report: dict[str, Any] = {"input": {"vertices": int(v.shape[0]), "faces": int(f.shape[0])}, "steps": {}}
    # Faces that repeat a vertex index have no area and confuse MeshLab's topology; drop them first.
    keep = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])
    report["steps"]["repeated_index_faces"] = {"vertices_removed": 0, "faces_removed": int((~keep).sum())}
    f = f[keep]
    if f.shape[0] == 0:
        raise ExportError("mesh has only degenerate faces: nothing to export")
    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(vertex_matrix=v, face_matrix=f.astype(np.int32)))
    pct = 100.0 * merge_tol  # pymeshlab takes a percentage of the bounding-box diagonal
    _step(ms, report, "merge_close_vertices", "meshing_merge_close_vertices", threshold=pymeshlab.PercentageValue(pct))
    _step(ms, report, "duplicate_faces", "meshing_remove_duplicate_faces")
    _step(ms, report, "null_faces", "meshing_remove_null_faces")
    min_size = max(1, math.ceil(min_component_frac * _counts(ms)[1]))
    _step(
        ms, report, "small_components", "meshing_remove_connected_component_by_face_number",
        mincomponentsize=min_size, removeunref=True,
    )
    _step(ms, report, "non_manifold_edges", "meshing_repair_non_manifold_edges", method="Remove Faces")
    # Splitting adds vertices, so this step reports a negative "vertices_removed".
    _step(ms, report, "non_manifold_vertices", "meshing_repair_non_manifold_vertices")
    _step(ms, report, "unreferenced_vertices", "meshing_remove_unreferenced_vertices")
    m = ms.current_mesh()
    out_v, out_f = m.vertex_matrix().astype(np.float32), m.face_matrix().astype(np.int64)
    if out_f.shape[0] == 0:
        raise ExportError("mesh is empty after cleanup (only debris or degenerate faces)")
    out_v, out_f = apply_face_budget(out_v, out_f, target_faces, report)
    return out_v, out_f, report
