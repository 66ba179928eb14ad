"""HashGrid against a float64 reference written from tiny-cuda-nn's documented semantics.

The reference below is deliberately independent of a3d_mesh.fields.hashgrid_torch: it loops over
the 8 corners with numpy uint32 arithmetic (which wraps modulo 2^32 exactly like CUDA's uint32) and
interpolates in float64 with torch autograd, so its parameter gradients are the reference too.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from a3d_mesh.fields import HashGrid, HashGridConfig, hash_grid_encode, import_tcnn, level_layouts, n_params
from a3d_mesh.fields.hashgrid_torch import cell_coordinates, corner_indices

PRIMES = (np.uint32(1), np.uint32(2654435761), np.uint32(805459861))
REFERENCE = HashGridConfig()  # 16 levels x 2, 2^19, base 16, scale 1.4473
# Mixed config: levels 0-1 dense (4^3, 8^3 <= 1024), levels 2-4 hashed into 2^10 entries.
MIXED = HashGridConfig(
    n_levels=5, n_features_per_level=2, log2_hashmap_size=10, base_resolution=4, per_level_scale=2.0
)


def ref_levels(cfg: HashGridConfig) -> list[tuple[np.float32, int, int, int]]:
    """(scale, resolution, offset, size) per level, from tcnn's GridEncoding constructor."""
    out, offset = [], 0
    log2_scale = np.log2(np.float32(cfg.per_level_scale))  # std::log2(float) -> float
    for level in range(cfg.n_levels):
        grow = np.float32(np.exp2(np.float32(level) * log2_scale))
        scale = grow * np.float32(cfg.base_resolution) - np.float32(1)
        res = int(np.ceil(scale)) + 1
        size = min((res**3 + 7) // 8 * 8, 2**cfg.log2_hashmap_size)
        out.append((np.float32(scale), res, offset, size))
        offset += size
    return out


def ref_encode(x: np.ndarray, params: torch.Tensor, cfg: HashGridConfig) -> torch.Tensor:
    """float64 reference encoding of float32 points x [N, 3] with a float64 flat table."""
    feats = cfg.n_features_per_level
    cols = []
    for scale, res, offset, size in ref_levels(cfg):
        # tcnn: pos = fmaf(scale, x, 0.5f) (one rounding to float32), grid = (uint32)(int)floor(pos).
        pos = (x.astype(np.float64) * np.float64(scale) + 0.5).astype(np.float32)
        floor = np.floor(pos)
        grid = floor.astype(np.int64).astype(np.uint32)
        t = torch.from_numpy((pos - floor).astype(np.float64))
        level = torch.zeros(x.shape[0], feats, dtype=torch.float64)
        for corner in range(8):
            bits = [(corner >> d) & 1 for d in range(3)]
            g = [grid[:, d] + np.uint32(bits[d]) for d in range(3)]
            if res**3 <= size:
                index = g[0] + g[1] * np.uint32(res) + g[2] * np.uint32(res * res)
            else:
                index = (g[0] * PRIMES[0]) ^ (g[1] * PRIMES[1]) ^ (g[2] * PRIMES[2])
            index = torch.from_numpy((index % np.uint32(size)).astype(np.int64))
            weight = torch.ones(x.shape[0], dtype=torch.float64)
            for d in range(3):
                weight = weight * (t[:, d] if bits[d] else 1.0 - t[:, d])
            rows = (offset + index)[:, None] * feats + torch.arange(feats)
            level = level + weight[:, None] * params[rows]
        cols.append(level)
    return torch.cat(cols, dim=1)


def sample_points(n: int, seed: int, outside: bool = False) -> np.ndarray:
    """Random float32 points in [0,1]^3 plus the cube's corners (and a few outside when asked)."""
    rng = np.random.default_rng(seed)
    pts = [rng.random((n, 3)), np.array([[0, 0, 0], [1, 1, 1], [0, 1, 0.5], [1, 0, 1]])]
    if outside:
        pts.append(np.array([[-0.2, 0.5, 1.3], [1.5, -0.7, 0.1], [-1.0, -1.0, -1.0]]))
    return np.concatenate(pts).astype(np.float32)


def test_layout_matches_tcnn_constructor() -> None:
    layouts = level_layouts(REFERENCE)
    for layout, (scale, res, offset, size) in zip(layouts, ref_levels(REFERENCE), strict=True):
        assert layout.scale == float(scale)
        assert (layout.resolution, layout.offset, layout.size) == (res, offset, size)
    assert [lay.dense for lay in layouts] == [True] * 5 + [False] * 11
    assert [lay.resolution for lay in layouts[:3]] == [16, 24, 34]
    assert all(lay.size == 2**19 for lay in layouts[5:])
    last = ref_levels(REFERENCE)[-1]
    assert n_params(REFERENCE) == (last[2] + last[3]) * 2
    assert REFERENCE.tcnn_config()["otype"] == "Grid" and REFERENCE.tcnn_config()["type"] == "Hash"


@pytest.mark.parametrize("cfg", [REFERENCE, MIXED], ids=["reference", "mixed"])
def test_forward_matches_reference(cfg: HashGridConfig) -> None:
    gen = torch.Generator().manual_seed(0)
    params64 = torch.rand(n_params(cfg), generator=gen, dtype=torch.float64) * 2 - 1
    x = sample_points(1500, seed=1, outside=True)
    grid = HashGrid(cfg, backend="torch")
    with torch.no_grad():
        grid.params.copy_(params64.float())
        out = grid(torch.from_numpy(x))
    expected = ref_encode(x, params64.float().double(), cfg)
    assert out.dtype == torch.float32 and out.shape == (x.shape[0], cfg.n_output_dims)
    torch.testing.assert_close(out.double(), expected, atol=2e-6, rtol=0)


def test_dense_and_hashed_level_indexing() -> None:
    dense, hashed = level_layouts(MIXED)[1], level_layouts(MIXED)[3]
    assert dense.dense and not hashed.dense and hashed.size == 1024
    # Dense: every vertex of the r^3 lattice owns its own entry (row-major, x fastest).
    r = dense.resolution
    ijk = torch.stack(torch.meshgrid(*[torch.arange(r - 1)] * 3, indexing="ij")).reshape(3, -1)
    idx = corner_indices(ijk, dense)  # [2, 2, 2, n] axes (z, y, x)
    assert torch.equal(idx[0, 0, 0], ijk[0] + ijk[1] * r + ijk[2] * r * r)
    assert torch.equal(idx[1, 1, 1], (ijk[0] + 1) + (ijk[1] + 1) * r + (ijk[2] + 1) * r * r)
    # Hashed: XOR of coordinate * prime (uint32), modulo the table size.
    pts = torch.tensor([[5, 17, 30], [0, 0, 0], [62, 1, 9]]).t()
    got = corner_indices(pts, hashed)[1, 0, 1]  # corner (x+1, y, z+1)
    for k in range(3):
        gx, gy, gz = (np.uint32(v) for v in (pts[0, k] + 1, pts[1, k], pts[2, k] + 1))
        with np.errstate(over="ignore"):  # uint32 wrap-around is the point
            want = ((gx * PRIMES[0]) ^ (gy * PRIMES[1]) ^ (gz * PRIMES[2])) % np.uint32(1024)
        assert int(got[k]) == int(want)


def test_vertex_lookup_reads_flat_layout() -> None:
    """At a lattice vertex the feature is the table entry at (offset + index) * F + f."""
    layout = level_layouts(MIXED)[0]  # dense, scale 3 (exact), resolution 4
    grid = HashGrid(MIXED, backend="torch")
    with torch.no_grad():
        grid.params.copy_(torch.arange(grid.params.numel(), dtype=torch.float32))
        # Vertex (1, 2, 3): pos = 3 x + 0.5 = vertex  ->  x = (v - 0.5) / 3.
        x = (torch.tensor([[1.0, 2.0, 3.0]]) - 0.5) / layout.scale
        out = grid(x)
    entry = layout.offset + 1 + 2 * 4 + 3 * 16
    torch.testing.assert_close(out[0, :2], torch.tensor([2.0 * entry, 2.0 * entry + 1]), atol=1e-3, rtol=0)


def test_param_gradient_matches_reference() -> None:
    gen = torch.Generator().manual_seed(3)
    x = sample_points(400, seed=4, outside=True)
    params32 = (torch.rand(n_params(MIXED), generator=gen) * 2 - 1).requires_grad_()
    upstream = torch.randn(x.shape[0], MIXED.n_output_dims, generator=gen)
    out = hash_grid_encode(torch.from_numpy(x), params32, level_layouts(MIXED), 2)
    (out * upstream).sum().backward()
    params64 = params32.detach().double().requires_grad_()
    (ref_encode(x, params64, MIXED) * upstream.double()).sum().backward()
    torch.testing.assert_close(params32.grad.double(), params64.grad, atol=1e-5, rtol=0)
    assert params32.grad.abs().sum() > 0


def test_gradcheck_points_and_params() -> None:
    cfg = HashGridConfig(
        n_levels=3, n_features_per_level=2, log2_hashmap_size=6, base_resolution=3, per_level_scale=1.7
    )
    gen = torch.Generator().manual_seed(5)
    layouts = level_layouts(cfg)
    assert any(lay.dense for lay in layouts) and not all(lay.dense for lay in layouts)
    x = (torch.rand(6, 3, generator=gen, dtype=torch.float64) * 0.9 + 0.05).requires_grad_()
    params = (torch.rand(n_params(cfg), generator=gen, dtype=torch.float64) - 0.5).requires_grad_()
    for layout in layouts:  # keep finite differences away from cell faces, where the map is only C0
        _, frac = cell_coordinates(x.detach().t(), layout.scale)
        assert bool(((frac > 1e-4) & (frac < 1 - 1e-4)).all())
    def encode(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return hash_grid_encode(a, b, layouts, 2)

    assert torch.autograd.gradcheck(encode, (x, params), eps=1e-6, atol=1e-6)
    # Second order (analytic normals in a loss): the backward itself is differentiable.
    assert torch.autograd.gradgradcheck(encode, (x, params), eps=1e-6, atol=1e-5, fast_mode=True)


def test_point_gradient_matches_finite_difference_float32() -> None:
    grid = HashGrid(MIXED, backend="torch", seed=2)
    with torch.no_grad():
        grid.params.uniform_(-1, 1)
    x = torch.tensor([[0.31, 0.62, 0.47]], requires_grad=True)
    weights = torch.randn(1, MIXED.n_output_dims, generator=torch.Generator().manual_seed(0))
    (grid(x) * weights).sum().backward()
    h = 1e-3 / level_layouts(MIXED)[-1].scale
    for d in range(3):
        step = torch.zeros(1, 3)
        step[0, d] = h
        with torch.no_grad():
            fd = ((grid(x + step) - grid(x - step)) * weights).sum() / (2 * h)
        assert abs(float(fd) - float(x.grad[0, d])) < 2e-2 * (1 + abs(float(fd)))


def test_param_round_trip_and_init() -> None:
    a = HashGrid(MIXED, backend="torch", seed=11)
    assert torch.equal(a.params, HashGrid(MIXED, backend="torch", seed=11).params)
    assert a.params.dtype == torch.float32 and a.params.shape == (n_params(MIXED),)
    peak = float(a.params.detach().abs().max())
    assert 5e-5 < peak <= 1e-4
    with torch.no_grad():
        a.params.uniform_(-1, 1)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = HashGrid(MIXED, backend="auto", seed=99)
    assert not torch.equal(a.params, b.params)
    b.load_state_dict(torch.load(buffer))
    assert list(b.state_dict()) == ["params"]
    x = torch.from_numpy(sample_points(300, seed=7))
    torch.testing.assert_close(a(x), b(x), atol=0, rtol=0)


def test_backend_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError):
        HashGrid(MIXED, backend="cuda")
    grid = HashGrid(MIXED, backend="auto")
    assert not grid.uses_tcnn(torch.zeros(1, 3))
    if import_tcnn() is None:
        with pytest.raises(RuntimeError, match="tinycudann"):
            HashGrid(MIXED, backend="tcnn")
    monkeypatch.setenv("A3D_NO_TCNN", "1")
    from a3d_mesh.fields import tcnn_disabled_by_env

    assert tcnn_disabled_by_env()
    monkeypatch.setenv("A3D_NO_TCNN", "0")
    assert not tcnn_disabled_by_env()
    assert grid(torch.zeros(0, 3)).shape == (0, MIXED.n_output_dims)
    with pytest.raises(ValueError):
        grid(torch.zeros(4, 2))


@pytest.mark.skipif(not torch.cuda.is_available() or import_tcnn() is None, reason="needs CUDA + tinycudann")
def test_tcnn_matches_torch_on_identical_params() -> None:
    grid = HashGrid(REFERENCE, backend="auto", seed=0).cuda()
    with torch.no_grad():
        grid.params.uniform_(-1, 1)
    x = torch.rand(4096, 3, device="cuda")
    out_tcnn = grid(x)
    (out_tcnn * 0.5).sum().backward()
    grad_tcnn, grid.params.grad = grid.params.grad.clone(), None
    torch_grid = HashGrid(REFERENCE, backend="torch").cuda()
    torch_grid.load_state_dict(grid.state_dict())
    out_torch = torch_grid(x)
    (out_torch * 0.5).sum().backward()
    torch.testing.assert_close(out_tcnn, out_torch, atol=1e-4, rtol=0)
    torch.testing.assert_close(grad_tcnn, torch_grid.params.grad, atol=1e-4, rtol=0)
