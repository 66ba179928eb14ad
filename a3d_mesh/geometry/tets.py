"""Regular tetrahedral grids for DMTet: a Kuhn (Freudenthal) subdivision of a cube lattice.

What is built
-------------
``tet_grid(resolution)`` fills the unit cube ``[-0.5, 0.5]^3`` with ``n = ceil(resolution / 2)``
cubes per axis, each split into the 6 Kuhn tetrahedra that share the cube's main diagonal
``(0,0,0) -> (1,1,1)``. Every cube is split the same way, so every square face is cut along the
same diagonal on both sides and the tetrahedra form a conforming mesh (no T-junctions).

The ``resolution`` number follows public DMTet grids (``128_tets.npz``: 277,410 vertices,
1,524,684 tetrahedra): their "128" has an edge length of about 1/64 of the cube, so here
``resolution`` is twice the number of cubes per axis. At 128 the grid has ``65^3 = 274,625``
vertices and ``6 * 64^3 = 1,572,864`` tetrahedra; the DMTet offset bound ``tanh(.) / resolution``
(in unit-cube units) is then half a cube edge, which keeps the tetrahedra from inverting.

Vertex ``(i, j, k)`` (integer lattice coordinates, ``0 <= i, j, k <= n``) has index
``i + (n + 1) * (j + (n + 1) * k)`` (x fastest) and position ``(i, j, k) / n - 0.5``.
Every tetrahedron ``(a, b, c, d)`` is positively oriented: ``det[b - a, c - a, d - a] > 0``.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import torch

from a3d_mesh.atomic import atomic_path

MIN_RESOLUTION = 8
MAX_RESOLUTION = 256
_CACHE_VERSION = 1

# Edges of a tetrahedron (a, b, c, d) as local vertex pairs, in kaolin's order.
TET_EDGE_PAIRS = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def cells_per_axis(resolution: int) -> int:
    """Number of lattice cubes per axis for a nominal DMTet ``resolution`` (``ceil(res / 2)``)."""
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise ValueError(f"tet grid resolution must be in [{MIN_RESOLUTION}, {MAX_RESOLUTION}], got {resolution}")
    return (resolution + 1) // 2


def default_cache_dir() -> Path:
    """``$A3D_CACHE/tets`` when ``A3D_CACHE`` is set, else ``~/.cache/a3d-mesh/tets``."""
    root = os.environ.get("A3D_CACHE")
    return Path(root) / "tets" if root else Path.home() / ".cache" / "a3d-mesh" / "tets"


def _kuhn_cube_tets() -> np.ndarray:
    """The 6 Kuhn tetrahedra of the unit cube as corner offsets, positively oriented.

    Returns:
        [6, 4, 3] int64 corner offsets in {0, 1}: tetrahedron p walks from (0,0,0) to (1,1,1)
        adding one axis at a time in the order of permutation p.
    """
    tets = []
    for perm in itertools.permutations(range(3)):
        corner = np.zeros(3, dtype=np.int64)
        path = [corner.copy()]
        for axis in perm:
            corner[axis] = 1
            path.append(corner.copy())
        a, b, c, d = path
        # Odd permutations give negative volume; swapping the last two corners flips it.
        if np.linalg.det(np.stack([b - a, c - a, d - a]).astype(np.float64)) < 0:
            c, d = d, c
        tets.append(np.stack([a, b, c, d]))
    return np.stack(tets)


def build_tet_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Build the Kuhn grid with ``n`` cubes per axis (no caching).

    Returns:
        verts: [(n+1)^3, 3] float32 in [-0.5, 0.5]^3.
        tets: [6 n^3, 4] int64, positively oriented, cube-major order.
    """
    m = n + 1
    lin = np.arange(m, dtype=np.float64) / n - 0.5
    zz, yy, xx = np.meshgrid(lin, lin, lin, indexing="ij")
    verts = np.stack([xx.ravel(), yy.ravel(), zz.ravel()], axis=1).astype(np.float32)

    ck, cj, ci = np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij")
    base = (ci + m * (cj + m * ck)).reshape(-1, 1, 1).astype(np.int64)  # [C, 1, 1]
    off = _kuhn_cube_tets()  # [6, 4, 3]
    off_idx = off[..., 0] + m * (off[..., 1] + m * off[..., 2])  # [6, 4]
    tets = (base + off_idx[None]).reshape(-1, 4)
    return verts, tets


def tet_grid(resolution: int, cache_dir: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The DMTet tetrahedral grid in the unit cube, cached on disk after the first build.

    Args:
        resolution: nominal DMTet resolution in [8, 256]; the grid has ``ceil(resolution / 2)``
            cubes per axis (see the module docstring: 128 gives 274,625 vertices).
        cache_dir: where ``kuhn_v{version}_{n}.npz`` is kept; default :func:`default_cache_dir`.

    Returns:
        verts: [V, 3] float32 CPU tensor in the unit cube ``[-0.5, 0.5]^3`` (grid frame; the DMTet
            field scales it by ``2 * bound`` into the world cube).
        tets: [T, 4] int64 CPU tensor, every tetrahedron positively oriented.
    """
    n = cells_per_axis(resolution)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / f"kuhn_v{_CACHE_VERSION}_{n}.npz"
    if path.exists():
        try:
            with np.load(path) as data:
                verts, tets = data["verts"], data["tets"]
            if verts.shape == ((n + 1) ** 3, 3) and tets.shape == (6 * n ** 3, 4):
                return torch.from_numpy(verts), torch.from_numpy(tets)
        except (OSError, ValueError, KeyError):
            pass  # a corrupt or foreign file: rebuild and overwrite it
    verts, tets = build_tet_grid(n)
    try:  # via a temporary name, so concurrent readers never see half a file
        with atomic_path(path) as tmp:
            np.savez(tmp, verts=verts, tets=tets)
    except OSError:
        pass  # a read-only cache only costs a rebuild next time
    return torch.from_numpy(verts), torch.from_numpy(tets)


def tet_edges(tets: torch.Tensor) -> torch.Tensor:
    """Unique undirected edges of a tetrahedral mesh.

    Args:
        tets: [T, 4] int64 vertex indices.

    Returns:
        [E, 2] int64, each row sorted ascending (``e[:, 0] < e[:, 1]``), rows in lexicographic
        order; on the device of ``tets``.
    """
    pairs = torch.tensor(TET_EDGE_PAIRS, device=tets.device)
    edges = torch.sort(tets[:, pairs].reshape(-1, 2), dim=1).values
    # One int64 key per edge: a 1-D unique is several times faster than unique(dim=0).
    n_verts = int(tets.max()) + 1 if tets.numel() else 1
    keys = torch.unique(edges[:, 0] * n_verts + edges[:, 1])
    return torch.stack([keys // n_verts, keys % n_verts], dim=1)
