"""Mesh cleanup before unwrapping: weld, drop degenerate faces, repair, drop debris, decimate.

Marching-tetrahedra meshes typically carry floating blobs, zero-area slivers and the odd
non-manifold edge where two sheets touch; xatlas and game engines both dislike those. pymeshlab
(MeshLab's filters) does the welding and repairs; debris is judged by surface area relative to
the largest component (numpy/scipy). This module counts what each step changed for the manifest.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pymeshlab
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

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


#: Default of ``min_component_area``: components under 3 % of the largest one's area are debris.
#: On toy-preset runs the floating blobs are 0.1-1.5 % of the object's area, while a thin part
#: that came loose (a 4 x 4 x 45 cm chair leg is ~6 % of a 1 m chair) stays above it.
MIN_COMPONENT_AREA = 0.03
#: The manifest lists at most this many removed components (largest first), then a count.
MAX_LISTED = 20


def face_areas(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``[F]`` float64 triangle areas (units of ``verts`` squared)."""
    v = verts.astype(np.float64)
    return 0.5 * np.linalg.norm(np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]]), axis=1)


def face_components(faces: np.ndarray, n_verts: int) -> tuple[int, np.ndarray]:
    """Connected components of the faces, joined through shared vertices.

    Returns: ``(count, labels [F] int64 in [0, count))``; vertices no face uses are ignored.
    """
    if faces.shape[0] == 0:
        return 0, np.zeros(0, np.int64)
    # Two edges per face connect all three corners; the graph is undirected.
    rows = np.concatenate([faces[:, 0], faces[:, 1]])
    cols = np.concatenate([faces[:, 1], faces[:, 2]])
    graph = coo_matrix((np.ones(rows.shape[0], np.int8), (rows, cols)), shape=(n_verts, n_verts))
    _, vert_label = connected_components(graph, directed=False)
    _, labels = np.unique(vert_label[faces[:, 0]], return_inverse=True)
    return int(labels.max()) + 1, labels.astype(np.int64)


def drop_small_components(
    verts: np.ndarray, faces: np.ndarray, min_area_frac: float
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Remove connected components whose area is below ``min_area_frac`` x the largest one's.

    Area, not face count, decides: it does not depend on how finely a part is tessellated, and
    the largest component (and any component as large) always stays, so two equal parts both do.

    Args:
        verts: ``[V,3]`` float; faces: ``[F,3]`` int.
        min_area_frac: in [0, 1]; 0 keeps everything.

    Returns:
        ``(verts, faces [F',3] int64, info)`` with unused vertices dropped; ``info`` is
        ``{"before", "after", "min_area_frac", "removed": [{"faces", "area_frac"}, ...] (largest
        first, at most MAX_LISTED), "removed_count"}`` (``area_frac``: of the largest component).
    """
    count, labels = face_components(faces, verts.shape[0])
    area = np.bincount(labels, weights=face_areas(verts, faces), minlength=count)
    frac = area / area.max() if count and area.max() > 0 else np.ones(count)
    small = np.flatnonzero(frac < min_area_frac)
    order = small[np.argsort(-frac[small], kind="stable")]
    n_faces = np.bincount(labels, minlength=count)
    info: dict[str, Any] = {
        "before": count, "after": count - small.size, "min_area_frac": float(min_area_frac),
        "removed": [{"faces": int(n_faces[c]), "area_frac": round(float(frac[c]), 5)} for c in order[:MAX_LISTED]],
        "removed_count": int(small.size),
    }
    kept = faces[~np.isin(labels, small)]
    used = np.unique(kept)
    remap = np.full(verts.shape[0], -1, np.int64)
    remap[used] = np.arange(used.size)
    return verts[used], remap[kept], info


def clean_mesh(
    verts: ArrayLike,
    faces: ArrayLike,
    merge_tol: float = 1e-6,
    min_component_area: float = MIN_COMPONENT_AREA,
    target_faces: int | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Clean a world-frame triangle mesh for export.

    Steps, in order: merge vertices closer than ``merge_tol`` x bbox diagonal; remove faces that
    repeat a vertex, duplicate faces and zero-area faces; remove faces on non-manifold edges and
    split non-manifold vertices; drop connected components whose surface area is below
    ``min_component_area`` x the largest component's (floating debris, and fragments the repairs
    cut off; the largest component always stays); drop unreferenced vertices; then, if
    ``target_faces`` is given and exceeded, quadric decimation to it.

    Args:
        verts: ``[V,3]`` float, world frame (tensor on any device or array).
        faces: ``[F,3]`` int, counter-clockwise seen from outside.
        merge_tol: weld distance as a fraction of the bounding-box diagonal.
        min_component_area: in [0, 1], a fraction of the largest component's area; 0 keeps all.
        target_faces: optional face budget.

    Returns:
        ``(verts [V',3] float32, faces [F',3] int64, report)`` as numpy; ``report`` holds the
        input/output counts, per-step ``vertices_removed`` / ``faces_removed`` and
        ``components`` (see :func:`drop_small_components`).

    Raises:
        ExportError: invalid input or fraction, or nothing left after cleanup.
    """
    if not 0.0 <= min_component_area <= 1.0:
        raise ExportError(f"min_component_area must be in [0, 1], got {min_component_area}")
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
    _step(ms, report, "non_manifold_edges", "meshing_repair_non_manifold_edges", method="Remove Faces")
    # Splitting adds vertices, so this step reports a negative "vertices_removed".
    _step(ms, report, "non_manifold_vertices", "meshing_repair_non_manifold_vertices")
    _step(ms, report, "unreferenced_vertices", "meshing_remove_unreferenced_vertices")
    m = ms.current_mesh()
    mid_v, mid_f = m.vertex_matrix(), m.face_matrix().astype(np.int64)
    if mid_f.shape[0] == 0:
        raise ExportError("mesh is empty after cleanup (only degenerate or non-manifold faces)")
    # After the repairs, so that fragments they cut off are judged too.
    out_v, out_f, report["components"] = drop_small_components(mid_v, mid_f, min_component_area)
    report["steps"]["small_components"] = {
        "vertices_removed": int(mid_v.shape[0] - out_v.shape[0]), "faces_removed": int(mid_f.shape[0] - out_f.shape[0]),
    }
    out_v, out_f = apply_face_budget(out_v.astype(np.float32), out_f, target_faces, report)
    return out_v, out_f, report
