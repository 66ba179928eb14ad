"""Surface sampling, exact surface moments and the symmetric Chamfer distance of triangle meshes.

Meshes are ``(verts [V,3] float, faces [F,3] int64)`` in any frame (the functions never move
them); points are ``[N,3]`` in that same frame and distances are in its units. Degenerate
(zero-area) faces are allowed: they get no samples and no weight.
"""

from __future__ import annotations

import torch


def face_areas(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area of every face, [F] (same dtype as ``verts``)."""
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return 0.5 * torch.linalg.cross(b - a, c - a).norm(dim=-1)


def sample_surface(verts: torch.Tensor, faces: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` points [n,3] drawn uniformly by area on the mesh surface, reproducibly from ``seed``.

    A face is chosen with probability proportional to its area, then a point uniformly inside it
    (barycentrics ``(1 - sqrt(r1), sqrt(r1) (1 - r2), sqrt(r1) r2)``, the standard area-uniform map).
    The draw uses its own CPU generator, so it does not disturb (or depend on) the global RNG.
    Raises ValueError for a mesh without area.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    area = face_areas(verts, faces).double().cpu()
    total = float(area.sum())
    if faces.shape[0] == 0 or not total > 0:
        raise ValueError("cannot sample a surface without area (no faces, or all degenerate)")
    g = torch.Generator().manual_seed(seed)
    fi = torch.multinomial(area / total, n, replacement=True, generator=g).to(faces.device)
    r1, r2 = torch.rand(n, generator=g), torch.rand(n, generator=g)
    s = r1.sqrt()
    w = torch.stack([1 - s, s * (1 - r2), s * r2], -1).to(verts)  # [n, 3]
    tri = verts[faces[fi]]  # [n, 3 corners, 3 coords]
    return (w.unsqueeze(-1) * tri).sum(1)


def surface_moments(verts: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Exact area-weighted centroid [3] and RMS radius about it (scalar) of the surface.

    The centroid is ``sum_f A_f (a+b+c)/3 / sum A_f``; the second moment of a triangle about the
    origin is ``A_f (|a|^2+|b|^2+|c|^2 + a.b + b.c + c.a) / 6``. Both are exact (no sampling), and
    both move with the mesh: under ``x -> s R x + t`` the centroid maps the same way and the RMS
    radius scales by ``s``, which is why :mod:`a3d_mesh.metrics.alignment` normalises with them.
    Computed in float64.
    """
    v = verts.double()
    a, b, c = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
    area = 0.5 * torch.linalg.cross(b - a, c - a).norm(dim=-1)
    total = area.sum()
    if not float(total) > 0:
        raise ValueError("cannot take moments of a surface without area")
    centroid = (area[:, None] * (a + b + c) / 3).sum(0) / total
    a, b, c = a - centroid, b - centroid, c - centroid
    second = (a * a + b * b + c * c + a * b + b * c + c * a).sum(-1) / 6  # E|p|^2 per face
    rms = float(((area * second).sum() / total).sqrt())
    return centroid.to(verts.dtype), rms


def _sq_dists(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared distances [..., N, M] as ``|x|^2 + |y|^2 - 2 x.y`` (one batched matrix product).

    Why not ``torch.cdist``: it takes a square root of every entry; callers only need minima, so
    the root is taken after the reduction, on N + M values instead of N * M (about 1.5x faster).
    May be slightly negative from rounding; callers clamp after reducing.
    """
    batch = torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    xb, yb = x.expand(*batch, *x.shape[-2:]), y.expand(*batch, *y.shape[-2:])
    xf, yf = xb.reshape(-1, *x.shape[-2:]), yb.reshape(-1, *y.shape[-2:])
    d2 = torch.baddbmm((yf * yf).sum(-1)[:, None, :], xf, yf.transpose(1, 2), alpha=-2.0)
    return d2.add_((xf * xf).sum(-1)[:, :, None]).view(*batch, x.shape[-2], y.shape[-2])


def nearest_distances(x: torch.Tensor, y: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """For every point of ``x`` [..., N, 3], the Euclidean distance to its nearest point of ``y``
    [..., M, 3]: [..., N]. Leading (batch) dimensions broadcast. ``x`` is split into chunks of
    ``chunk`` rows so that memory stays at ``chunk * M`` distances per batch element (5k x 5k
    on a CPU needs ~20 MB, not 100 MB)."""
    out = [_sq_dists(x[..., i:i + chunk, :], y).amin(-1) for i in range(0, x.shape[-2], chunk)]
    return torch.cat(out, -1).clamp_min(0).sqrt()


def chamfer_distance(x: torch.Tensor, y: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Symmetric Chamfer distance between point sets ``x`` [..., N, 3] and ``y`` [..., M, 3]: [...].

    ``0.5 * (mean_i min_j |x_i - y_j| + mean_j min_i |y_j - x_i|)`` with plain (not squared)
    Euclidean distances, so it is a mean surface-to-surface distance in the points' own units:
    0 for identical sets, and ``d`` for two parallel patches ``d`` apart (densely sampled).
    Batched over leading dimensions (used for many yaw hypotheses at once). Each chunk of
    ``chunk`` rows of ``x`` gives one block of distances that serves both directions (a running
    minimum for y -> x), so the pairwise distances are computed once and memory stays at
    ``chunk * M`` per batch element. Precision: float32 ``|x|^2 + |y|^2 - 2 x.y`` is exact to
    about ``1e-3 * |coordinates|`` per distance (identical sets give ~1e-4, not 0), far below the
    sampling floor of any surface comparison; pass float64 points for more.
    """
    if x.shape[-2] == 0 or y.shape[-2] == 0:
        raise ValueError("chamfer_distance needs points in both sets")
    fwd, back = [], None
    for i in range(0, x.shape[-2], chunk):
        d2 = _sq_dists(x[..., i:i + chunk, :], y)  # [..., c, M]
        fwd.append(d2.amin(-1))
        m = d2.amin(-2)
        back = m if back is None else torch.minimum(back, m)
    assert back is not None
    fwd_d, back_d = torch.cat(fwd, -1).clamp_min(0).sqrt(), back.clamp_min(0).sqrt()
    return 0.5 * (fwd_d.mean(-1) + back_d.mean(-1))


def mesh_chamfer(va: torch.Tensor, fa: torch.Tensor, vb: torch.Tensor, fb: torch.Tensor, n: int = 5000,
                 seed: int = 0) -> float:
    """:func:`chamfer_distance` between ``n`` area-uniform surface samples of two meshes (same frame)."""
    pa = sample_surface(va, fa, n, seed)
    pb = sample_surface(vb, fb, n, seed + 1)
    return float(chamfer_distance(pa, pb))
