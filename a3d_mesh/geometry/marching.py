"""Differentiable marching tetrahedra with kaolin's conventions and output order.

Sign and orientation convention (kaolin's ``ops.conversions.marching_tetrahedra``): a grid vertex
is *occupied* when ``sdf > 0`` and free when ``sdf <= 0``; the surface vertex on a sign-changing
edge ``(a, b)`` is the zero of the linear interpolant, ``(p_a * -s_b + p_b * s_a) / (s_a - s_b)``;
and in a positively oriented tetrahedron each triangle's normal (right-hand rule) points towards
the occupied (``sdf > 0``) side. With this project's positively oriented grids
(:func:`a3d_mesh.geometry.tets.tet_grid`) and its SDF sign (negative inside, positive outside),
that means faces are counter-clockwise seen from outside, as ``docs/conventions.md`` requires.

Output order matches kaolin exactly: surface vertices follow the lexicographic order of their
(sorted) edge ``(a, b)``; faces come first from tetrahedra that emit one triangle, then (two per
tet) from those that emit two, each group in tetrahedron order.
"""

from __future__ import annotations

import torch

from .tets import TET_EDGE_PAIRS

# Triangles per sign case. The case index is sum_i occupied_i * 2^i over the tet's 4 vertices;
# entries index the tet's 6 edges in TET_EDGE_PAIRS order, -1 pads. These are the same case
# triangles (with the same vertex rotation) as kaolin's table, which "identical output" needs.
TRIANGLE_TABLE = (
    (-1, -1, -1, -1, -1, -1),
    (1, 0, 2, -1, -1, -1),
    (4, 0, 3, -1, -1, -1),
    (1, 4, 2, 1, 3, 4),
    (3, 1, 5, -1, -1, -1),
    (2, 3, 0, 2, 5, 3),
    (1, 4, 0, 1, 5, 4),
    (4, 2, 5, -1, -1, -1),
    (4, 5, 2, -1, -1, -1),
    (4, 1, 0, 4, 5, 1),
    (3, 2, 0, 3, 5, 2),
    (1, 3, 5, -1, -1, -1),
    (4, 1, 2, 4, 3, 1),
    (3, 0, 4, -1, -1, -1),
    (2, 0, 1, -1, -1, -1),
    (-1, -1, -1, -1, -1, -1),
)
TRIANGLES_PER_CASE = (0, 1, 1, 2, 1, 2, 2, 1, 1, 2, 2, 1, 2, 1, 1, 0)


def _crossing_edges(tets: torch.Tensor, occupied: torch.Tensor, n_verts: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Topology of the surface (no gradients): which tets are cut and where.

    Args:
        tets: [T, 4] int64.
        occupied: [V] bool, ``sdf > 0``.
        n_verts: V.

    Returns:
        cut: [T] bool, tets with 1..3 occupied vertices.
        edge_ends: [M, 2] int64 sorted grid-vertex pairs of the sign-changing edges, one per
            output vertex, in lexicographic order.
        local_to_vertex: [Tc, 6] int64, for each cut tet and each of its 6 edges the output
            vertex index (or -1 where the edge does not change sign).
        case: [Tc] int64 sign case of each cut tet.
    """
    occ_t = occupied[tets]  # [T, 4]
    count = occ_t.sum(-1)
    cut = (count > 0) & (count < 4)
    cut_tets = tets[cut]
    pairs = torch.tensor(TET_EDGE_PAIRS, device=tets.device)
    ends = torch.sort(cut_tets[:, pairs].reshape(-1, 2), dim=1).values
    keys, inverse = torch.unique(ends[:, 0] * n_verts + ends[:, 1], return_inverse=True)
    a, b = keys // n_verts, keys % n_verts
    crossing = occupied[a] != occupied[b]
    new_index = torch.cumsum(crossing.long(), 0) - 1
    new_index = torch.where(crossing, new_index, torch.full_like(new_index, -1))
    local_to_vertex = new_index[inverse].reshape(-1, 6)
    weights = torch.tensor([1, 2, 4, 8], device=tets.device)
    case = (occ_t[cut].long() * weights).sum(-1)
    return cut, torch.stack([a[crossing], b[crossing]], 1), local_to_vertex, case


def _marching_torch(verts: torch.Tensor, tets: torch.Tensor, sdf: torch.Tensor, return_tet_idx: bool
                    ) -> tuple[torch.Tensor, ...]:
    """Pure-torch marching tetrahedra (see :func:`marching_tets`)."""
    device = verts.device
    with torch.no_grad():
        cut, ends, local_to_vertex, case = _crossing_edges(tets, sdf > 0, verts.shape[0])
        table = torch.tensor(TRIANGLE_TABLE, device=device)
        n_tri = torch.tensor(TRIANGLES_PER_CASE, device=device)[case]
        one, two = n_tri == 1, n_tri == 2
        faces = torch.cat([
            torch.gather(local_to_vertex[one], 1, table[case[one], :3]),
            torch.gather(local_to_vertex[two], 1, table[case[two]]).reshape(-1, 3),
        ])
    # The only differentiable part: positions interpolated along the crossing edges, written with
    # kaolin's operation order so the floats agree bit for bit.
    s_a, s_b = sdf[ends[:, 0]].unsqueeze(-1), sdf[ends[:, 1]].unsqueeze(-1)
    denom = s_a - s_b
    out_verts = verts[ends[:, 0]] * (-s_b / denom) + verts[ends[:, 1]] * (s_a / denom)
    if not return_tet_idx:
        return out_verts, faces
    tet_ids = torch.nonzero(cut).squeeze(1)
    tet_idx = torch.cat([tet_ids[one], tet_ids[two].repeat_interleave(2)])
    return out_verts, faces, tet_idx


_KAOLIN_DISABLED: str | None = None


def kaolin_import_error() -> str | None:
    """Why ``kaolin.ops.conversions`` does not import (``"Type: message"``), or None when it does."""
    try:
        import kaolin.ops.conversions  # noqa: F401
    except Exception as exc:  # ImportError, or a kaolin built against another torch/CUDA
        return f"{type(exc).__name__}: {exc}"
    return None


def _kaolin_available() -> bool:
    return _KAOLIN_DISABLED is None and kaolin_import_error() is None


def disable_kaolin(reason: str) -> None:
    """Switch kaolin off for ``backend="auto"`` for the rest of the process (the torch path runs).
    ``reason`` is one line, shown by :func:`kaolin_disabled` and in the preflight report."""
    global _KAOLIN_DISABLED
    _KAOLIN_DISABLED = reason or "disabled"


def kaolin_disabled() -> str | None:
    """The reason given to :func:`disable_kaolin`, or None while kaolin may be used."""
    return _KAOLIN_DISABLED


def _marching_kaolin(verts: torch.Tensor, tets: torch.Tensor, sdf: torch.Tensor, return_tet_idx: bool
                     ) -> tuple[torch.Tensor, ...]:
    """kaolin's batched implementation for one grid (imported lazily; CUDA tensors)."""
    from kaolin.ops.conversions import marching_tetrahedra

    out = marching_tetrahedra(verts.unsqueeze(0), tets, sdf.unsqueeze(0), return_tet_idx)
    return tuple(part[0] for part in out)


def marching_tets(verts: torch.Tensor, tets: torch.Tensor, sdf: torch.Tensor, return_tet_idx: bool = False,
                  backend: str = "auto") -> tuple[torch.Tensor, ...]:
    """Triangle mesh of the zero level set of an SDF sampled on a tetrahedral grid.

    Differentiable w.r.t. ``sdf`` and ``verts`` (surface vertices are interpolated along
    sign-changing edges); the topology (faces) carries no gradient.

    Args:
        verts: [V, 3] float grid vertex positions (any frame; typically the deformed grid in the
            world frame).
        tets: [T, 4] int64 vertex indices, positively oriented for outward faces.
        sdf: [V] float, negative inside / positive outside (``sdf > 0`` is kaolin's "occupied").
        return_tet_idx: also return the source tetrahedron of every face.
        backend: ``"auto"`` (kaolin when it imports, is not disabled (:func:`disable_kaolin`) and
            the tensors are on CUDA), ``"cuda"``
            (kaolin, required), or ``"cpu"`` (the pure-torch reference, any device).

    Returns:
        verts: [Vm, 3] surface vertices in the frame of ``verts``, same dtype/device.
        faces: [F, 3] int64, counter-clockwise seen from the ``sdf > 0`` side for positive tets.
        tet_idx: [F] int64 (only if ``return_tet_idx``).
    """
    if sdf.dim() == 2 and sdf.shape[1] == 1:
        sdf = sdf[:, 0]
    if sdf.shape != verts.shape[:1] or verts.shape[-1] != 3 or tets.shape[-1] != 4:
        raise ValueError(f"bad shapes: verts {tuple(verts.shape)}, tets {tuple(tets.shape)}, sdf {tuple(sdf.shape)}")
    tets = tets.to(device=verts.device, dtype=torch.long)
    if backend not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown backend {backend!r}")
    use_kaolin = backend == "cuda" or (backend == "auto" and verts.is_cuda and _kaolin_available())
    if use_kaolin:
        if not verts.is_cuda:
            raise ValueError("backend='cuda' needs CUDA tensors")
        return _marching_kaolin(verts, tets, sdf, return_tet_idx)
    return _marching_torch(verts, tets, sdf, return_tet_idx)
