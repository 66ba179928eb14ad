"""Surface sampling, moments and Chamfer distance against cases with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from a3d_mesh.metrics.surface import (chamfer_distance, face_areas, mesh_chamfer, nearest_distances, sample_surface,
                                      surface_moments)
from a3d_mesh.toy.shapes import box, merge, rotate_yaw, template


def square(size: float = 1.0, y: float = 0.0, x0: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A horizontal square [x0, x0 + size] x [0, size] at height y, two triangles."""
    v = torch.tensor([[x0, y, 0.0], [x0 + size, y, 0.0], [x0 + size, y, size], [x0, y, size]])
    return v, torch.tensor([[0, 2, 1], [0, 3, 2]])


def test_samples_lie_on_the_surface_and_are_seeded() -> None:
    v, f = box((-1.0, -0.5, -2.0), (1.0, 0.5, 2.0))
    p = sample_surface(v, f, 3000, seed=3)
    assert p.shape == (3000, 3)
    # On a box surface at least one coordinate sits on its face plane.
    on_face = ((p.abs() - torch.tensor([1.0, 0.5, 2.0])).abs() < 1e-5).any(-1)
    assert bool(on_face.all())
    assert torch.equal(p, sample_surface(v, f, 3000, seed=3))
    assert not torch.equal(p, sample_surface(v, f, 3000, seed=4))


def test_sampling_is_area_weighted() -> None:
    # Two squares, areas 1 and 4: a fifth of the samples should land on the small one.
    v, f = merge([square(1.0, x0=0.0), square(2.0, x0=5.0)])
    assert torch.allclose(face_areas(v, f).sum(), torch.tensor(5.0))
    p = sample_surface(v, f, 8000, seed=0)
    frac = float((p[:, 0] < 2.5).float().mean())
    assert abs(frac - 0.2) < 0.02  # binomial sd ~0.0045
    # Uniform inside a face: the small square's sample mean is its centre.
    small = p[p[:, 0] < 2.5]
    assert torch.allclose(small.mean(0), torch.tensor([0.5, 0.0, 0.5]), atol=0.03)


def test_degenerate_mesh_cannot_be_sampled() -> None:
    v = torch.zeros(3, 3)
    with pytest.raises(ValueError):
        sample_surface(v, torch.tensor([[0, 1, 2]]), 10)


def test_moments_of_a_cube_and_their_equivariance() -> None:
    v, f = box((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))
    c, rms = surface_moments(v, f)
    assert torch.allclose(c, torch.zeros(3), atol=1e-6)
    # On the face x = 1: E|p|^2 = 1 + E[y^2] + E[z^2] = 1 + 1/3 + 1/3.
    assert rms == pytest.approx(math.sqrt(5 / 3), rel=1e-6)
    t = template("chair")
    c0, r0 = surface_moments(t.verts, t.faces)
    shift = torch.tensor([0.4, -1.0, 2.0])
    c1, r1 = surface_moments(2.5 * rotate_yaw(t.verts, 70.0) + shift, t.faces)
    assert torch.allclose(c1, 2.5 * rotate_yaw(c0[None], 70.0)[0] + shift, atol=1e-4)
    assert r1 == pytest.approx(2.5 * r0, rel=1e-5)


def test_chamfer_identical_zero_parallel_patches_give_their_gap() -> None:
    p = sample_surface(*square(), 2000, seed=0)
    assert float(chamfer_distance(p, p)) < 1e-4  # cdist's matrix-product route is exact to ~1e-5 here
    # Two unit squares 0.2 apart along their normal: every nearest distance is ~0.2.
    d = mesh_chamfer(*square(y=0.0), *square(y=0.2), n=5000)
    assert d == pytest.approx(0.2, rel=0.03)
    # A mesh against a far shifted copy of itself: the distance is the shift (diameter << shift).
    t = template("table")
    far = mesh_chamfer(t.verts, t.faces, t.verts + torch.tensor([0.0, 0.0, 100.0]), t.faces, n=1000)
    assert far == pytest.approx(100.0, rel=0.005)
    # Two samplings of one surface: only the sampling floor, far below the scale of the shape.
    assert mesh_chamfer(t.verts, t.faces, t.verts, t.faces, n=5000) < 0.02


def test_small_shift_costs_at_most_the_shift() -> None:
    t = template("chair")
    base = mesh_chamfer(t.verts, t.faces, t.verts, t.faces, n=3000)
    shifted = [mesh_chamfer(t.verts, t.faces, t.verts + torch.tensor([s, 0.0, 0.0]), t.faces, n=3000)
               for s in (0.05, 0.1, 0.2)]
    assert base < shifted[0] < shifted[1] < shifted[2] < 0.2 + base  # monotone, bounded by the shift


def test_chunking_and_batching_agree_and_5k_fits() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(5000, 3, generator=g), torch.rand(5000, 3, generator=g) + 0.1
    full = chamfer_distance(x, y, chunk=5000)
    assert torch.allclose(chamfer_distance(x, y, chunk=777), full)
    brute = 0.5 * (torch.cdist(x[:300], y[:200]).amin(1).mean() + torch.cdist(x[:300], y[:200]).amin(0).mean())
    assert torch.allclose(chamfer_distance(x[:300], y[:200], chunk=64), brute)
    assert torch.allclose(nearest_distances(x[:300], y[:200], chunk=50), torch.cdist(x[:300], y[:200]).amin(1))
    batched = chamfer_distance(x[:400].expand(3, -1, -1), torch.stack([y[:400], y[:400] + 1, x[:400]]), chunk=128)
    assert torch.allclose(batched[0], chamfer_distance(x[:400], y[:400])) and float(batched[2]) < 1e-4
    assert float(batched[1]) > float(batched[0])
