"""Tetrahedral grid: size, bounds, orientation, conformity, determinism and the disk cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from a3d_mesh.geometry import cells_per_axis, tet_edges, tet_grid


def _volumes(verts: torch.Tensor, tets: torch.Tensor) -> torch.Tensor:
    p = verts.double()[tets]
    return torch.linalg.det(torch.stack([p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], p[:, 3] - p[:, 0]], 1)) / 6.0


def test_sizes_bounds_and_dmtet_scale(tmp_path: Path) -> None:
    verts, tets = tet_grid(8, tmp_path)
    assert verts.dtype == torch.float32 and tets.dtype == torch.int64
    assert verts.shape == (125, 3) and tets.shape == (384, 4)
    assert verts.min().item() == -0.5 and verts.max().item() == 0.5
    assert cells_per_axis(9) == 5 and cells_per_axis(256) == 128
    big_v, big_t = tet_grid(128, tmp_path)
    # About the public DMTet "128" grid (277,410 vertices, 1,524,684 tets).
    assert big_v.shape[0] == 274_625 and big_t.shape[0] == 1_572_864


@pytest.mark.parametrize("resolution", [8, 13])
def test_positive_orientation_fills_cube(tmp_path: Path, resolution: int) -> None:
    verts, tets = tet_grid(resolution, tmp_path)
    vol = _volumes(verts, tets)
    n = cells_per_axis(resolution)
    assert torch.allclose(vol, torch.full_like(vol, 1.0 / (6 * n ** 3)), rtol=1e-4)
    assert abs(vol.sum().item() - 1.0) < 1e-6
    assert tets.min() == 0 and tets.max() == verts.shape[0] - 1


def test_conforming_faces(tmp_path: Path) -> None:
    verts, tets = tet_grid(10, tmp_path)
    n = cells_per_axis(10)
    # The 4 faces of every tet, oriented outwards (opposite vertex removed, orientation kept).
    local = torch.tensor([[1, 2, 3], [0, 3, 2], [0, 1, 3], [0, 2, 1]])
    faces = tets[:, local].reshape(-1, 3)
    key = torch.sort(faces, dim=1).values
    uniq, counts = torch.unique(key, dim=0, return_counts=True)
    assert counts.max() == 2
    assert (counts == 1).sum() == 6 * 2 * n * n  # only the cube's boundary squares are unshared
    # Shared faces appear with opposite orientations: the directed versions are all distinct.
    rolled = torch.stack([faces, faces[:, [1, 2, 0]], faces[:, [2, 0, 1]]], 1)
    canon = rolled[torch.arange(faces.shape[0]), rolled[:, :, 0].argmin(1)]
    assert torch.unique(canon, dim=0).shape[0] == faces.shape[0]


def test_edges_unique_sorted_and_counted(tmp_path: Path) -> None:
    _, tets = tet_grid(8, tmp_path)
    n = cells_per_axis(8)
    edges = tet_edges(tets)
    assert (edges[:, 0] < edges[:, 1]).all()
    assert torch.unique(edges, dim=0).shape == edges.shape
    axis, face_diag, body_diag = 3 * n * (n + 1) ** 2, 3 * n * n * (n + 1), n ** 3
    assert edges.shape[0] == axis + face_diag + body_diag


def test_deterministic_and_cached(tmp_path: Path) -> None:
    v1, t1 = tet_grid(12, tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    v2, t2 = tet_grid(12, tmp_path)
    assert torch.equal(v1, v2) and torch.equal(t1, t2)
    # A cached file is really what is returned: a same-shaped marker survives the load.
    with np.load(files[0]) as data:
        marked = data["verts"].copy()
    marked[0, 0] = 0.25
    np.savez(files[0], verts=marked, tets=t1.numpy())
    assert tet_grid(12, tmp_path)[0][0, 0].item() == 0.25
    # A corrupt file is rebuilt and overwritten.
    files[0].write_bytes(b"not an npz")
    v3, t3 = tet_grid(12, tmp_path)
    assert torch.equal(v1, v3) and torch.equal(t1, t3)
    assert tet_grid(12, tmp_path)[0][0, 0].item() == -0.5


def test_default_cache_dir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("A3D_CACHE", str(tmp_path))
    tet_grid(8)
    assert len(list((tmp_path / "tets").glob("*.npz"))) == 1


@pytest.mark.parametrize("resolution", [7, 257])
def test_resolution_range(tmp_path: Path, resolution: int) -> None:
    with pytest.raises(ValueError):
        tet_grid(resolution, tmp_path)
