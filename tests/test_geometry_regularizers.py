"""Regularisers: values on hand-computed cases, zero cases, gradients."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from a3d_mesh.geometry import (adjacent_face_pairs, laplacian_smoothness, mesh_edges, normal_consistency,
                               sdf_sign_entropy)


def test_sdf_sign_entropy_value_and_zero_case() -> None:
    edges = torch.tensor([[0, 1], [1, 2], [2, 3]])
    sdf = torch.tensor([2.0, -1.0, -3.0, -0.5], requires_grad=True)  # only edge (0, 1) crosses
    loss = sdf_sign_entropy(sdf, edges)
    expected = F.binary_cross_entropy_with_logits(torch.tensor(2.0), torch.tensor(0.0)) \
        + F.binary_cross_entropy_with_logits(torch.tensor(-1.0), torch.tensor(1.0))
    assert torch.isclose(loss, expected)
    loss.backward()
    # The crossing values are pulled towards zero; the others get no gradient.
    assert sdf.grad[0] > 0 and sdf.grad[1] < 0 and sdf.grad[2] == 0 and sdf.grad[3] == 0
    same = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    zero = sdf_sign_entropy(same, edges)
    assert zero.item() == 0.0
    zero.backward()  # still attached to the graph
    assert torch.equal(same.grad, torch.zeros(4))


def _hinge(angle: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Two triangles sharing edge (0, 1) on the x axis, the second rotated by ``angle`` about it."""
    verts = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, 1.0, 0.0],
                          [0.5, -math.cos(angle), -math.sin(angle)]], requires_grad=True)
    faces = torch.tensor([[0, 1, 2], [1, 0, 3]])
    return verts, faces


def test_normal_consistency_hinge() -> None:
    verts, faces = _hinge(0.0)
    assert normal_consistency(verts, faces).abs().item() < 1e-6  # flat
    verts, faces = _hinge(math.pi / 2)
    loss = normal_consistency(verts, faces)
    assert abs(loss.item() - 1.0) < 1e-5  # 90 degrees: 1 - cos = 1
    loss.backward()
    assert verts.grad.abs().sum() > 0
    assert adjacent_face_pairs(faces, 4).tolist() == [[0, 1]]


def test_normal_consistency_no_shared_edges() -> None:
    verts = torch.rand(6, 3, requires_grad=True)
    loss = normal_consistency(verts, torch.tensor([[0, 1, 2], [3, 4, 5]]))
    assert loss.item() == 0.0 and loss.requires_grad


def test_laplacian_fan() -> None:
    # Hexagon fan: the centre sits at its neighbours' mean, the rim does not.
    angles = torch.arange(6) * (math.pi / 3)
    rim = torch.stack([angles.cos(), angles.sin(), torch.zeros(6)], 1)
    verts = torch.cat([torch.zeros(1, 3), rim]).requires_grad_()
    faces = torch.tensor([[0, 1 + i, 1 + (i + 1) % 6] for i in range(6)])
    assert mesh_edges(faces, 7).shape[0] == 12
    # Rim vertex: neighbours are the centre and its two rim neighbours.
    expected_rim = (rim[0] - (rim[1] + rim[5]) / 3).pow(2).sum()
    loss = laplacian_smoothness(verts, faces)
    assert torch.isclose(loss, expected_rim * 6 / 7)
    lifted = verts.detach().clone()
    lifted[0, 2] = 0.5  # a spike at the centre costs more
    assert laplacian_smoothness(lifted, faces) > loss
    loss.backward()
    assert verts.grad.abs().sum() > 0
    empty = laplacian_smoothness(verts, torch.zeros(0, 3, dtype=torch.long))
    assert empty.item() == 0.0
