"""Reading mesh files: geometry and the surface's own colours (texture, vertex, face, material).

Used by editing (the input mesh), the known-targets guide and the benchmarks alike, so it belongs to
no stage. Frames are the file's own; units are the file's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

COLOR_SAMPLES = 100_000  # surface samples of a coloured mesh: ~300^2 texels, finer than any training render


class SurfaceColors:
    """The albedo of a mesh's surface as a colour field: world points [N,3] -> rgb [N,3] in [0,1].

    Stored as dense surface samples (points [S,3], colours [S,3], float32, in the mesh's frame) and
    looked up by inverse-distance weighting of the 4 nearest samples. Meant for points *on* the
    surface (render_mesh's visible points of that very mesh), where the nearest samples are within
    about the sample spacing, so texture detail down to that spacing survives. Why samples and not
    per-vertex colours: a coarse textured mesh has few vertices and all its detail in the texture.
    """

    def __init__(self, points: np.ndarray, colors: np.ndarray) -> None:
        from scipy.spatial import cKDTree  # scipy comes with trimesh; only coloured meshes need it

        self.points = np.asarray(points, dtype=np.float32)
        self.colors = np.clip(np.asarray(colors, dtype=np.float32), 0.0, 1.0)
        self._tree = cKDTree(self.points)

    def __call__(self, p: torch.Tensor) -> torch.Tensor:
        q = p.detach().cpu().numpy().astype(np.float32)
        k = min(4, len(self.points))
        d, idx = self._tree.query(q, k=k)
        d, idx = d.reshape(len(q), k), idx.reshape(len(q), k)
        w = 1.0 / np.maximum(d, 1e-6)
        rgb = (self.colors[idx] * w[..., None]).sum(1) / w.sum(1, keepdims=True)
        return torch.from_numpy(rgb.astype(np.float32)).to(p.device)

    def transformed(self, centre: np.ndarray, scale: float) -> "SurfaceColors":
        """The same colours with points mapped by ``(x - centre) * scale`` (e.g. into the set's frame)."""
        return SurfaceColors((self.points - centre) * scale, self.colors)


def _rgb01(c: object) -> np.ndarray:
    """An RGB(A) colour as uint8 0..255 or float 0..1 -> rgb [3] float64 in [0, 1]."""
    a = np.asarray(c)
    return a[:3] / 255.0 if a.dtype.kind in "ui" else a[:3].astype(np.float64)


def _part_colors(m: object, n: int, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``n`` surface samples of one trimesh part with their rgb [n,3] in [0,1], or None if the part
    has no colour: texture (at the sample's interpolated UV, times the base colour factor), vertex
    colours (interpolated), face colours, or a flat material colour."""
    import trimesh
    from trimesh.visual.color import uv_to_interpolated_color

    vis = m.visual  # type: ignore[attr-defined]
    pts, fidx, bary = trimesh.sample.sample_surface(m, n, seed=seed, return_barycentric=True)
    faces = np.asarray(m.faces)[fidx]  # type: ignore[attr-defined]
    if isinstance(vis, trimesh.visual.TextureVisuals):
        mat = vis.material
        pbr = hasattr(mat, "baseColorTexture")  # glTF; else an OBJ/MTL SimpleMaterial
        image = mat.baseColorTexture if pbr else getattr(mat, "image", None)
        factor = mat.baseColorFactor if pbr else getattr(mat, "diffuse", None)
        if vis.uv is None or not len(vis.uv):
            image = None  # a texture without UVs cannot be placed
        if image is None and factor is None:
            return None  # a bare default material: no colour of its own
        f3 = np.ones(3) if factor is None else _rgb01(factor)
        if image is not None:
            uv = (np.asarray(vis.uv)[faces] * bary[..., None]).sum(1)
            tex = uv_to_interpolated_color(uv, image)[:, :3] / 255.0
            # glTF multiplies the texture by the factor; MTL's map_Kd replaces Kd (as most renderers do).
            rgb = tex * f3 if pbr else tex
        else:
            rgb = np.broadcast_to(f3, (n, 3))
    elif vis.kind == "vertex":
        rgb = (np.asarray(vis.vertex_colors, dtype=np.float64)[faces, :3] * bary[..., None]).sum(1) / 255.0
    elif vis.kind == "face":
        rgb = np.asarray(vis.face_colors, dtype=np.float64)[fidx, :3] / 255.0
    else:
        return None
    return np.asarray(pts, dtype=np.float32), np.asarray(rgb, dtype=np.float32)


def load_colored_mesh(path: str | Path, samples: int = COLOR_SAMPLES) -> tuple[torch.Tensor, torch.Tensor, SurfaceColors | None]:
    """Read a mesh file (OBJ, PLY, GLB/GLTF, STL) as (verts [V,3] float32, faces [F,3] int64, colours).

    Multi-part scenes are concatenated in their world placement. ``colours`` is a
    :class:`SurfaceColors` (in the file's frame) when any part carries colour (texture + UVs,
    vertex or face colours, a material colour), else None; uncoloured parts of a partly coloured
    scene get no samples, so their points take the nearest coloured part's colour. Raises
    ValueError (one line) for unreadable files, no triangles, non-finite coordinates.
    """
    import trimesh

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"mesh file not found: {p}")
    try:
        loaded = trimesh.load(p, force="scene", process=False)
        parts = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh) and len(g.faces)]
    except Exception as e:  # trimesh raises many types for unreadable files
        raise ValueError(f"cannot read mesh {p}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not parts:
        raise ValueError(f"mesh {p} has no triangles")
    offsets = np.cumsum([0] + [len(g.vertices) for g in parts])
    v = np.concatenate([np.asarray(g.vertices, dtype=np.float32) for g in parts])
    f = np.concatenate([np.asarray(g.faces, dtype=np.int64) + o for g, o in zip(parts, offsets)])
    if not np.isfinite(v).all():
        raise ValueError(f"mesh {p} has non-finite vertex coordinates")
    if samples <= 0:
        return torch.from_numpy(v), torch.from_numpy(f), None
    area = np.array([g.area for g in parts])
    counts = np.maximum(1, np.round(samples * area / max(area.sum(), 1e-30))).astype(int)  # even density
    sampled = [c for i, (g, n) in enumerate(zip(parts, counts)) if (c := _part_colors(g, int(n), seed=i)) is not None]
    colors = SurfaceColors(np.concatenate([c[0] for c in sampled]), np.concatenate([c[1] for c in sampled])) if sampled else None
    return torch.from_numpy(v), torch.from_numpy(f), colors


def load_mesh(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`load_colored_mesh` without the colours: (verts [V,3] float32, faces [F,3] int64)."""
    v, f, _ = load_colored_mesh(path, samples=0)
    return v, f
