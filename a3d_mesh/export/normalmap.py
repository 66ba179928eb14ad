"""Tangent-space normal map baked from the high-resolution mesh onto the exported (decimated) one.

Convention (glTF 2.0 / OpenGL "Y+" normal maps): tangent = direction of increasing u, bitangent
= ``w * cross(n, t)`` = direction of increasing v with the package's v-up UVs (= the image's up
direction), texel = ``(t.h, b.h, n.h) * 0.5 + 0.5`` for the high-resolution normal ``h``. The
tangents used here are written into the GLB (``TANGENT``) so engines decode with the same frame.
"""

from __future__ import annotations

import numpy as np
import torch

from a3d_mesh.geometry.regularizers import vertex_normals

from .bake import dilate
from .errors import ExportError


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-20)


def vertex_tangents(verts: np.ndarray, faces: np.ndarray, uv: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Per-vertex tangents ``[V,4]`` float32: unit xyz orthogonal to ``normals``, w = +-1 handedness.

    Per-face tangent/bitangent from the UV gradients (summed unnormalised, so larger faces weigh
    more), Gram-Schmidt against the vertex normal. Vertices without usable UV gradients get any
    unit vector perpendicular to the normal.

    Args: ``verts [V,3]``, ``faces [F,3]``, ``uv [V,2]`` (v up), ``normals [V,3]`` unit.
    """
    p = verts.astype(np.float64)
    e1, e2 = p[faces[:, 1]] - p[faces[:, 0]], p[faces[:, 2]] - p[faces[:, 0]]
    d1, d2 = uv[faces[:, 1]] - uv[faces[:, 0]], uv[faces[:, 2]] - uv[faces[:, 0]]
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    r = np.where(np.abs(det) > 1e-20, 1.0 / np.where(det == 0, 1.0, det), 0.0)[:, None]
    ft = (e1 * d2[:, 1:2] - e2 * d1[:, 1:2]) * r
    fb = (e2 * d1[:, 0:1] - e1 * d2[:, 0:1]) * r
    t, b = np.zeros_like(p), np.zeros_like(p)
    for k in range(3):
        np.add.at(t, faces[:, k], ft)
        np.add.at(b, faces[:, k], fb)
    n = normals.astype(np.float64)
    t = t - n * (n * t).sum(1, keepdims=True)
    bad = np.linalg.norm(t, axis=1) < 1e-12
    # Any perpendicular works where UVs are degenerate: cross the normal with its least-aligned axis.
    axis = np.eye(3)[np.argmin(np.abs(n[bad]), axis=1)]
    t[bad] = np.cross(n[bad], axis)
    t = _normalize(t)
    w = np.where((np.cross(n, t) * b).sum(1) < 0, -1.0, 1.0)
    return np.concatenate([t, w[:, None]], axis=1).astype(np.float32)


def high_res_normals(points: np.ndarray, high_verts: np.ndarray, high_faces: np.ndarray, k: int = 4) -> np.ndarray:
    """Normals ``[N,3]`` of the high-resolution mesh near ``points [N,3]``.

    Inverse-distance blend of the ``k`` nearest high-resolution vertex normals (a KD-tree query,
    far cheaper than exact closest-point projection and accurate when the exported mesh is a
    decimation of the high-resolution one, so every texel lies close to dense vertices).
    """
    try:
        from scipy.spatial import cKDTree
    except ImportError:
        raise ExportError("normal-map baking needs scipy: pip install scipy") from None
    hn = vertex_normals(high_verts, high_faces).astype(np.float64)
    k = min(k, high_verts.shape[0])
    dist, idx = cKDTree(high_verts.astype(np.float64)).query(points.astype(np.float64), k=k)
    dist, idx = dist.reshape(len(points), k), idx.reshape(len(points), k)
    w = 1.0 / np.maximum(dist, 1e-9)
    return _normalize((hn[idx] * w[..., None]).sum(1))


@torch.no_grad()
def bake_normal_map(
    verts: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray,
    normals: np.ndarray,
    tangents: np.ndarray,
    high_verts: np.ndarray,
    high_faces: np.ndarray,
    texture_size: int = 1024,
    dilate_px: int = 8,
    backend: str = "auto",
) -> np.ndarray:
    """Bake the high-resolution mesh's normals into a tangent-space map of the exported mesh.

    Args:
        verts, faces, uv, normals, tangents: the exported mesh (seam-split), world frame; ``uv``
            v up; ``tangents [V,4]`` from :func:`vertex_tangents`.
        high_verts, high_faces: the high-resolution mesh, same frame.
        texture_size: the map is ``texture_size x texture_size``.
        dilate_px: texels of dilation across chart borders.
        backend: raster backend (the arrays are on the CPU, so ``auto`` means the CPU path).

    Returns:
        ``[S,S,3]`` float32 in [0, 1], top row first; texels beyond the dilated gutter hold the
        flat normal (0.5, 0.5, 1).

    Raises:
        ExportError: scipy missing.
    """
    from a3d_mesh.render.ops import interpolate, rasterize

    tc = torch.as_tensor(uv, dtype=torch.float32)
    tri = torch.as_tensor(faces, dtype=torch.int64)
    clip = torch.cat([tc * 2 - 1, torch.zeros_like(tc[:, :1]), torch.ones_like(tc[:, :1])], dim=1)
    rast, _ = rasterize(clip[None], tri, (texture_size, texture_size), grad_db=False, backend=backend)
    attr = torch.as_tensor(np.concatenate([verts, normals, tangents], axis=1), dtype=torch.float32)
    per_texel, _ = interpolate(attr[None], rast, tri, backend=backend)
    mask = rast[0, ..., 3] > 0
    out = torch.zeros(texture_size, texture_size, 3)
    out[..., 2] = 1.0
    if bool(mask.any()):
        a = per_texel[0][mask].double().numpy()
        n = _normalize(a[:, 3:6])
        t = _normalize(a[:, 6:9] - n * (n * a[:, 6:9]).sum(1, keepdims=True))
        b = np.where(a[:, 9:10] < 0, -1.0, 1.0) * np.cross(n, t)
        h = high_res_normals(a[:, :3], high_verts, high_faces)
        ts = np.stack([(h * t).sum(1), (h * b).sum(1), (h * n).sum(1)], axis=1)
        ts[:, 2] = np.maximum(ts[:, 2], 1e-3)  # a high normal facing away cannot be encoded; flatten it
        out[mask] = torch.as_tensor(_normalize(ts), dtype=torch.float32)
    img, grown = dilate(out * 0.5 + 0.5, mask, dilate_px)
    # Beyond the dilated gutter a flat normal is the neutral value for mip-maps to blend towards.
    img = torch.where(grown[..., None], img, torch.tensor([0.5, 0.5, 1.0]))
    return img.flip(0).clamp(0, 1).numpy()
