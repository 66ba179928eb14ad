"""Mesh checks used to validate marching-tets output: closedness, orientation, Euler, volume."""

from __future__ import annotations

import torch
import trimesh

from a3d_mesh.geometry import connected_components, euler_characteristic, is_closed_oriented_manifold, signed_volume


def _cube() -> tuple[torch.Tensor, torch.Tensor]:
    m = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    return torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces, dtype=torch.long)


def test_closed_cube_and_its_defects() -> None:
    verts, faces = _cube()
    assert is_closed_oriented_manifold(faces, 8)
    assert euler_characteristic(faces) == 2
    assert abs(signed_volume(verts, faces).item() - 1.0) < 1e-6
    assert not is_closed_oriented_manifold(faces[1:], 8)  # a hole
    flipped = faces.clone()
    flipped[0] = flipped[0, [0, 2, 1]]
    assert not is_closed_oriented_manifold(flipped, 8)  # one face against its neighbours
    assert abs(signed_volume(verts, faces[:, [0, 2, 1]]).item() + 1.0) < 1e-6
    degenerate = torch.cat([faces, torch.tensor([[0, 0, 1]])])
    assert not is_closed_oriented_manifold(degenerate, 8)
    assert not is_closed_oriented_manifold(torch.zeros(0, 3, dtype=torch.long), 0)


def test_components_and_euler_of_two_cubes() -> None:
    verts, faces = _cube()
    two = torch.cat([faces, faces + 8])
    assert connected_components(two, 16) == 2
    assert euler_characteristic(two) == 4
    assert connected_components(faces, 8) == 1
    assert is_closed_oriented_manifold(two, 16)
    assert abs(signed_volume(torch.cat([verts, verts + 3.0]), two).item() - 2.0) < 1e-5
