"""DMTetField: one latent-conditioned grid fitted to a sphere (e_0) and a box (e_1), morph, hybrid."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import trimesh

from a3d_mesh.fields import HashGridConfig
from a3d_mesh.geometry import (DMTetField, euler_characteristic, fit_dmtet, is_closed_oriented_manifold, mesh_target,
                               near_surface_weights, signed_volume, tet_edges)

SMALL_GRID = HashGridConfig(n_levels=8, n_features_per_level=2, log2_hashmap_size=14, base_resolution=4,
                            per_level_scale=1.5)
RADIUS, HALF = 0.6, 0.3


def sphere(p: torch.Tensor) -> torch.Tensor:
    return p.norm(dim=-1) - RADIUS


def box(p: torch.Tensor) -> torch.Tensor:
    q = p.abs() - HALF
    return q.clamp_min(0).norm(dim=-1) + q.max(-1).values.clamp_max(0)


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a & b).sum() / (a | b).sum()).item()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("a3d_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("A3D_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def fitted(cache: Path) -> DMTetField:
    torch.manual_seed(0)
    field = DMTetField(2, 64, SMALL_GRID, hidden=32, seed=0)
    losses = fit_dmtet(field, [sphere, box], steps=150, lr=1e-2, batch=4096, generator=torch.Generator().manual_seed(0))
    assert losses[-1] < 0.05 * losses[0]
    return field


def test_shapes_offset_bound_and_state(cache: Path) -> None:
    field = DMTetField(3, 16, SMALL_GRID, hidden=16, bound=2.0, seed=1)
    sdf, verts = field.sdf_and_verts(torch.tensor([0.2, 0.3, 0.5]))
    n_grid = field.grid_verts.shape[0]
    assert sdf.shape == (n_grid,) and verts.shape == (n_grid, 3)
    offset = verts - field.grid_verts * 4.0
    assert offset.abs().max() < 2 * 2.0 / 16  # tanh(.) / resolution of the unit cube, times 2 * bound
    assert field.world_grid.abs().max() == 2.0
    assert not any(k in field.state_dict() for k in ("grid_verts", "tets", "edges", "_edges"))
    assert torch.equal(field.edges, tet_edges(field.tets)) and field.edges is field.edges
    with pytest.raises(ValueError):
        field.sdf_and_verts(torch.tensor([0.5, 0.5]))
    per_point = torch.full((n_grid, 3), 1 / 3)
    s2, _ = field.sdf_and_verts(lambda p: per_point)
    s3, _ = field.sdf_and_verts(torch.full((3,), 1 / 3))
    assert torch.allclose(s2, s3, atol=1e-6)
    with pytest.raises(ValueError):
        fit_dmtet(field, [sphere], steps=1)


def test_gradients_reach_the_field(cache: Path) -> None:
    torch.manual_seed(2)
    field = DMTetField(2, 16, SMALL_GRID, hidden=16, seed=2)
    fit_dmtet(field, [sphere, box], steps=40, batch=1024, generator=torch.Generator().manual_seed(2))
    verts, faces = field.extract(torch.tensor([0.5, 0.5]))
    assert faces.shape[0] > 0
    verts.pow(2).sum().backward()
    grads = [p.grad for p in field.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


@pytest.mark.parametrize("k,target", [(0, sphere), (1, box)])
def test_corners_reproduce_shapes(fitted: DMTetField, k: int, target) -> None:
    u = torch.eye(2)[k]
    with torch.no_grad():
        points = torch.cat([fitted.world_grid, torch.rand(20000, 3, generator=torch.Generator().manual_seed(k)) * 2 - 1])
        sdf, _ = fitted.query(points, u)
        assert iou(sdf < 0, target(points) < 0) >= 0.9
        verts, faces = fitted.extract(u)
    assert is_closed_oriented_manifold(faces, verts.shape[0]) and euler_characteristic(faces) == 2
    true_volume = 4 / 3 * torch.pi * RADIUS ** 3 if k == 0 else (2 * HALF) ** 3
    assert abs(signed_volume(verts, faces).item() - true_volume) < 0.1 * true_volume


def test_morph_is_continuous(fitted: DMTetField) -> None:
    alphas = torch.linspace(0, 1, 11)
    volumes, sdfs = [], []
    with torch.no_grad():
        for a in alphas:
            u = torch.stack([1 - a, a])
            sdf, verts = fitted.sdf_and_verts(u)
            mv, mf = fitted.extract(u)
            assert is_closed_oriented_manifold(mf, mv.shape[0])
            volumes.append(signed_volume(mv, mf).item())
            sdfs.append(sdf)
    span = abs(volumes[0] - volumes[-1])
    steps = [abs(b - a) for a, b in zip(volumes, volumes[1:])]
    assert max(steps) < 0.3 * span  # no jump: 10 steps, none takes a third of the change
    sdf_span = (sdfs[0] - sdfs[-1]).abs().max()
    assert max((b - a).abs().max() for a, b in zip(sdfs, sdfs[1:])) < 0.3 * sdf_span


def test_hybrid_code_field(fitted: DMTetField) -> None:
    def u_fn(p: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(p[:, 0] / 0.05)  # object 0 (sphere) for x < 0, object 1 (box) for x > 0
        return torch.stack([1 - w, w], dim=1)

    with torch.no_grad():
        verts, faces = fitted.extract(u_fn)
    assert is_closed_oriented_manifold(faces, verts.shape[0])
    cell = 2.0 / 32
    left, right = verts[verts[:, 0] < -0.25], verts[verts[:, 0] > 0.25]
    assert left.shape[0] > 0 and right.shape[0] > 0
    assert sphere(left).abs().max() < cell and box(right).abs().max() < cell


def test_init_from_mesh(cache: Path) -> None:
    mesh = trimesh.creation.box(extents=(0.9, 0.56, 0.7))
    verts = torch.tensor(mesh.vertices, dtype=torch.float32)
    faces = torch.tensor(mesh.faces, dtype=torch.long)
    field = DMTetField(1, 32, SMALL_GRID, hidden=32, seed=3)
    fit_dmtet(field, [mesh_target(verts, faces)], steps=100, batch=4096, cache_targets=True,
              generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        points = field.world_grid
        sdf, _ = field.query(points, torch.ones(1))
    inside = (points.abs() <= torch.tensor([0.45, 0.28, 0.35])).all(-1)
    assert iou(sdf < 0, inside) >= 0.9


def test_fit_clamps_unbounded_targets(cache: Path) -> None:
    torch.manual_seed(4)
    field = DMTetField(1, 16, SMALL_GRID, hidden=16, seed=4)
    losses = fit_dmtet(field, [lambda p: torch.full((p.shape[0],), -1000.0)], steps=60, batch=1024, clamp=0.5,
                       offset_weight=0.0, generator=torch.Generator().manual_seed(4))
    assert losses[-1] < 1e-2 < losses[0]  # the loss is measured against -0.5, not -1000
    with torch.no_grad():
        sdf, _ = field.query(field.world_grid, torch.ones(1))
    assert (sdf + 0.5).abs().max() < 0.1


def test_near_surface_weights() -> None:
    w = near_surface_weights(torch.tensor([0.1, -0.05, 2.0, -3.0]), near_fraction=0.5, near_weight=4.0)
    assert w.tolist() == [5.0, 5.0, 1.0, 1.0]
