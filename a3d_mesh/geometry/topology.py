"""Topology and volume checks of triangle meshes (validation of marching-tets output).

All functions take ``faces [F, 3] int64`` (and ``verts [V, 3]`` where positions matter) and work on
any device; none are differentiable except :func:`signed_volume`.
"""

from __future__ import annotations

import torch


def directed_edge_keys(faces: torch.Tensor, n_verts: int) -> torch.Tensor:
    """[3F] int64 keys ``a * n_verts + b`` of the directed half-edges ``a -> b`` of every face."""
    return (faces * n_verts + faces[:, [1, 2, 0]]).reshape(-1)


def is_closed_oriented_manifold(faces: torch.Tensor, n_verts: int) -> bool:
    """True when every edge has exactly two faces that traverse it in opposite directions.

    That is: each directed half-edge occurs once and its reverse occurs once too, which implies
    a closed (watertight), edge-manifold, consistently oriented surface. Degenerate faces that
    repeat a vertex make it False.
    """
    if faces.shape[0] == 0:
        return False
    if bool(((faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 2] == faces[:, 0])).any()):
        return False
    keys = directed_edge_keys(faces, n_verts)
    if torch.unique(keys).numel() != keys.numel():
        return False
    reverse = (faces[:, [1, 2, 0]] * n_verts + faces).reshape(-1)
    return bool(torch.isin(reverse, keys).all())


def euler_characteristic(faces: torch.Tensor, n_verts: int | None = None) -> int:
    """``V - E + F`` counting only vertices referenced by ``faces`` (2 for a sphere, 0 for a torus).

    ``n_verts`` only sizes the edge keys; it defaults to ``faces.max() + 1``.
    """
    if faces.shape[0] == 0:
        return 0
    n = int(faces.max()) + 1 if n_verts is None else n_verts
    ends = torch.sort(faces[:, [[0, 1], [1, 2], [2, 0]]].reshape(-1, 2), dim=1).values
    n_edges = torch.unique(ends[:, 0] * n + ends[:, 1]).numel()
    n_used = torch.unique(faces).numel()
    return n_used - n_edges + faces.shape[0]


def connected_components(faces: torch.Tensor, n_verts: int) -> int:
    """Number of connected components of the face graph (faces joined through shared vertices)."""
    if faces.shape[0] == 0:
        return 0
    # Label propagation on vertices: each vertex repeatedly takes the smallest label of its faces.
    label = torch.arange(n_verts, device=faces.device)
    while True:
        face_min = label[faces].min(dim=1).values
        new = label.clone()
        new.scatter_reduce_(0, faces.reshape(-1), face_min.repeat_interleave(3), reduce="amin")
        if torch.equal(new, label):
            break
        label = new
    return torch.unique(label[faces.reshape(-1)]).numel()


def signed_volume(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Enclosed volume by the divergence theorem: positive for outward (counter-clockwise) faces.

    Args:
        verts: [V, 3] float; faces: [F, 3] int64 of a closed mesh.

    Returns:
        scalar tensor (cubic units of the frame of ``verts``).
    """
    p0, p1, p2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return (p0 * torch.linalg.cross(p1, p2)).sum() / 6.0
