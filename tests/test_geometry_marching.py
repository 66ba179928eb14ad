"""Marching tetrahedra: kaolin's convention and order, topology on analytic shapes, gradients."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from a3d_mesh.geometry import (cells_per_axis, euler_characteristic, is_closed_oriented_manifold, marching_tets,
                               signed_volume, tet_grid)
from a3d_mesh.geometry.marching import TRIANGLE_TABLE, TRIANGLES_PER_CASE
from a3d_mesh.geometry.tets import TET_EDGE_PAIRS

UNIT_TET = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.Tensor, torch.Tensor]:
    return tet_grid(32, tmp_path_factory.mktemp("tets"))


def test_kaolin_docstring_example() -> None:
    verts, faces, tet_idx = marching_tets(UNIT_TET, torch.tensor([[0, 1, 2, 3]]),
                                          torch.tensor([-1.0, -1.0, 0.5, 0.5]), return_tet_idx=True)
    expected = torch.tensor([[0.0, 2 / 3, 0.0], [0.0, 0.0, 2 / 3], [1 / 3, 2 / 3, 0.0], [1 / 3, 0.0, 2 / 3]])
    assert torch.allclose(verts, expected, atol=1e-6)
    assert faces.tolist() == [[3, 0, 1], [3, 2, 0]]
    assert tet_idx.tolist() == [0, 0]


@pytest.mark.parametrize("case", range(16))
def test_case_table_geometry(case: int) -> None:
    """Each case's triangles use exactly the crossing edges and face the occupied (sdf > 0) side."""
    occupied = [(case >> i) & 1 == 1 for i in range(4)]
    sdf = torch.tensor([0.7 if o else -0.4 for o in occupied])
    verts, faces = marching_tets(UNIT_TET, torch.tensor([[0, 1, 2, 3]]), sdf)
    crossing = [e for e, (a, b) in enumerate(TET_EDGE_PAIRS) if occupied[a] != occupied[b]]
    assert faces.shape[0] == TRIANGLES_PER_CASE[case] == {0: 0, 3: 1, 4: 2}[len(crossing)]
    used = {e for e in TRIANGLE_TABLE[case] if e >= 0}
    assert used == set(crossing)
    occ_centre = UNIT_TET[torch.tensor(occupied)].mean(0) if any(occupied) else None
    for f in faces:
        p = verts[f]
        normal = torch.linalg.cross(p[1] - p[0], p[2] - p[0])
        assert normal.norm() > 1e-6
        assert torch.dot(normal, occ_centre - p.mean(0)) > 0


def _reference_marching(verts: torch.Tensor, tets: torch.Tensor, sdf: torch.Tensor):
    """Slow loop version of kaolin's output order (vertices by sorted edge, 1-tri tets first)."""
    occ = (sdf > 0).tolist()
    cut = [t for t in range(tets.shape[0]) if 0 < sum(occ[i] for i in tets[t].tolist()) < 4]
    edge_set = set()
    for t in cut:
        for a, b in TET_EDGE_PAIRS:
            i, j = sorted((int(tets[t, a]), int(tets[t, b])))
            if occ[i] != occ[j]:
                edge_set.add((i, j))
    edges = sorted(edge_set)
    index = {e: n for n, e in enumerate(edges)}
    out_v = torch.stack([(verts[i] * -sdf[j] + verts[j] * sdf[i]) / (sdf[i] - sdf[j]) for i, j in edges])
    groups: dict[int, list] = {1: [], 2: []}
    for t in cut:
        case = sum(int(occ[int(tets[t, i])]) << i for i in range(4))
        local = [index.get(tuple(sorted((int(tets[t, a]), int(tets[t, b])))), -1) for a, b in TET_EDGE_PAIRS]
        tris = [[local[e] for e in TRIANGLE_TABLE[case][3 * k:3 * k + 3]] for k in range(TRIANGLES_PER_CASE[case])]
        groups[len(tris)] += [(tri, t) for tri in tris]
    rows = groups[1] + groups[2]
    return out_v, torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows])


def test_matches_reference_order(tmp_path: Path) -> None:
    verts, tets = tet_grid(8, tmp_path)
    sdf = torch.randn(verts.shape[0], generator=torch.Generator().manual_seed(3))
    sdf[::7] = 0.0  # zeros count as outside (not occupied), as in kaolin
    v, f, t = marching_tets(verts, tets, sdf, return_tet_idx=True)
    rv, rf, rt = _reference_marching(verts, tets, sdf)
    assert torch.allclose(v, rv, atol=1e-6)
    assert torch.equal(f, rf) and torch.equal(t, rt)


def test_sphere_closed_genus0_and_accurate(grid: tuple[torch.Tensor, torch.Tensor]) -> None:
    verts, tets = grid
    radius = 0.3
    mv, mf = marching_tets(verts, tets, verts.norm(dim=-1) - radius)
    assert is_closed_oriented_manifold(mf, mv.shape[0])
    assert euler_characteristic(mf) == 2
    cell = 1.0 / cells_per_axis(32)
    assert (mv.norm(dim=-1) - radius).abs().max() <= 0.5 * cell
    vol = signed_volume(mv, mf).item()  # positive: faces are counter-clockwise seen from outside
    assert abs(vol - 4 / 3 * torch.pi * radius ** 3) < 0.03 * 4 / 3 * torch.pi * radius ** 3


def test_torus_genus1(grid: tuple[torch.Tensor, torch.Tensor]) -> None:
    verts, tets = grid
    ring = torch.sqrt(verts[:, 0] ** 2 + verts[:, 2] ** 2) - 0.25
    mv, mf = marching_tets(verts, tets, torch.sqrt(ring ** 2 + verts[:, 1] ** 2) - 0.12)
    assert is_closed_oriented_manifold(mf, mv.shape[0])
    assert euler_characteristic(mf) == 0
    assert signed_volume(mv, mf).item() > 0


def test_empty_and_full(grid: tuple[torch.Tensor, torch.Tensor]) -> None:
    verts, tets = grid
    for value in (1.0, -1.0):
        mv, mf, ti = marching_tets(verts, tets, torch.full((verts.shape[0],), value), return_tet_idx=True)
        assert mv.shape == (0, 3) and mf.shape == (0, 3) and ti.shape == (0,)


def test_tet_idx_points_to_source_tet(grid: tuple[torch.Tensor, torch.Tensor]) -> None:
    verts, tets = grid
    mv, mf, ti = marching_tets(verts, tets, verts.norm(dim=-1) - 0.3, return_tet_idx=True)
    assert ti.shape == (mf.shape[0],)
    # Barycentric coordinates of each face centroid in its tet are all >= 0.
    p = verts.double()[tets[ti]]
    m = torch.stack([p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], p[:, 3] - p[:, 0]], -1)
    bary = torch.linalg.solve(m, mv.double()[mf].mean(1) - p[:, 0])
    assert (bary > -1e-6).all() and (bary.sum(-1) < 1 + 1e-6).all()


def test_gradients_wrt_sdf_and_verts(tmp_path: Path) -> None:
    verts, tets = tet_grid(8, tmp_path)
    verts = verts.double()
    sdf = verts.norm(dim=-1) - 0.31
    sdf = sdf + 0.02 * torch.sign(sdf)  # keep values away from 0 so the topology stays fixed
    weight = torch.randn(1000, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def surface(v: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        out = marching_tets(v, tets, s)[0]
        return (out * weight[: out.shape[0]]).sum()

    assert torch.autograd.gradcheck(surface, (verts.clone().requires_grad_(), sdf.clone().requires_grad_()))
    # Growing the SDF everywhere shrinks the enclosed volume.
    s = sdf.clone().requires_grad_()
    mv, mf = marching_tets(verts, tets, s)
    signed_volume(mv, mf).backward()
    assert s.grad.sum() < 0


def test_backend_selection(grid: tuple[torch.Tensor, torch.Tensor]) -> None:
    verts, tets = grid
    sdf = verts.norm(dim=-1) - 0.3
    with pytest.raises(ValueError):
        marching_tets(verts, tets, sdf, backend="cuda")  # kaolin needs CUDA tensors
    with pytest.raises(ValueError):
        marching_tets(verts, tets, sdf, backend="nvdiffrast")
    a = marching_tets(verts, tets, sdf, backend="auto")
    b = marching_tets(verts, tets, sdf[:, None], backend="cpu")
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_box_faces_all_point_outwards(grid: tuple[torch.Tensor, torch.Tensor]) -> None:
    """A box SDF: every face normal points away from the box centre (no inward faces anywhere)."""
    verts, tets = grid
    q = verts.abs() - 0.2
    sdf = q.clamp_min(0).norm(dim=-1) + q.max(-1).values.clamp_max(0)
    mv, mf = marching_tets(verts, tets, sdf)
    p = mv[mf]
    normal = torch.linalg.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    assert ((normal * p.mean(1)).sum(-1) > 0).all()
