"""Mesh signed distance: exact distances (vs trimesh), winding-number sign, chunking invariance."""

from __future__ import annotations

import numpy as np
import torch
import trimesh

from a3d_mesh.geometry import mesh_sdf, nearest_distance, point_triangle_distance_sq, winding_number


def _box_sdf(p: torch.Tensor, half: float) -> torch.Tensor:
    q = p.abs() - half
    return q.clamp_min(0).norm(dim=-1) + q.max(-1).values.clamp_max(0)


def _mesh(m: trimesh.Trimesh) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces, dtype=torch.long)


def test_point_triangle_distance_matches_trimesh() -> None:
    rng = np.random.default_rng(0)
    tri = rng.normal(size=(40, 3, 3))
    tri[0, 2] = tri[0, 0] + 2.0 * (tri[0, 1] - tri[0, 0])  # a degenerate (collinear) triangle
    points = rng.normal(size=(50, 3)) * 1.5
    ours = point_triangle_distance_sq(torch.tensor(points), torch.tensor(tri)).sqrt().numpy()
    for j in range(tri.shape[0]):
        closest = trimesh.triangles.closest_point(np.repeat(tri[j:j + 1], len(points), 0), points)
        np.testing.assert_allclose(ours[:, j], np.linalg.norm(points - closest, axis=1), atol=1e-9)


def test_box_is_exact_and_signed() -> None:
    verts, faces = _mesh(trimesh.creation.box(extents=(0.8, 0.8, 0.8)))
    points = torch.rand(3000, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    sdf = mesh_sdf(verts, faces, points)
    assert torch.allclose(sdf, _box_sdf(points, 0.4), atol=1e-5)


def test_sphere_and_chunking() -> None:
    verts, faces = _mesh(trimesh.creation.icosphere(subdivisions=2, radius=0.5))
    points = torch.rand(1500, 3, generator=torch.Generator().manual_seed(2)) * 2 - 1
    sdf = mesh_sdf(verts, faces, points)
    # The polygon sits inside the sphere by at most its sagitta (~0.5 * (1 - cos 9.5 deg)).
    assert (sdf - (points.norm(dim=-1) - 0.5)).abs().max() < 0.01
    small = mesh_sdf(verts, faces, points, chunk_pairs=1000)
    assert torch.equal(sdf, small)


def test_winding_number_inside_outside_and_open_mesh() -> None:
    verts, faces = _mesh(trimesh.creation.icosphere(subdivisions=1, radius=0.5))
    tri = verts[faces]
    w = winding_number(torch.tensor([[0.0, 0.0, 0.0], [0.1, -0.2, 0.1], [0.9, 0.0, 0.0]]), tri)
    assert torch.allclose(w, torch.tensor([1.0, 1.0, 0.0]), atol=1e-4)
    # Flipped faces invert the winding number (the sign relies on outward orientation).
    w_flip = winding_number(torch.zeros(1, 3), verts[faces[:, [0, 2, 1]]])
    assert torch.allclose(w_flip, torch.tensor([-1.0]), atol=1e-4)
    # Removing a few faces (a hole) keeps the centre clearly inside.
    w_open = winding_number(torch.zeros(1, 3), tri[3:])
    assert 0.75 < w_open.item() < 1.0
    sdf = mesh_sdf(verts, faces[3:], torch.zeros(1, 3))
    assert sdf.item() < 0


def test_culled_nearest_distance_equals_brute_force() -> None:
    verts, faces = _mesh(trimesh.creation.icosphere(subdivisions=2, radius=0.5))
    tri = verts[faces]
    points = torch.rand(800, 3, generator=torch.Generator().manual_seed(4)) * 3 - 1.5
    points[0] = 0.0  # equidistant from every face: nothing can be culled
    points[1] = verts[5]  # on the mesh
    brute = point_triangle_distance_sq(points, tri).min(1).values.sqrt()
    assert torch.allclose(nearest_distance(points, tri), brute, atol=1e-6)
