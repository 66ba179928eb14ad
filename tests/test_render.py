"""CPU-path render ops: conventions, finite-difference gradient checks, texture, antialias."""

from __future__ import annotations

import math

import pytest
import torch

from a3d_mesh import render

torch.manual_seed(0)


def _tri_pos(verts_xyw: list[tuple[float, float, float]], z: float = 0.0) -> torch.Tensor:
    """Clip-space ``[1, 3, 4]`` from (ndc_x, ndc_y, w) per vertex (z/w = ``z``)."""
    return torch.tensor([[[x * w, y * w, z * w, w] for x, y, w in verts_xyw]])


TRI = torch.tensor([[0, 1, 2]])


def test_conventions_pixel_centres_rows_and_barycentrics() -> None:
    # Triangle in the lower-left quadrant of clip space must land in low rows / low columns.
    pos = _tri_pos([(-0.9, -0.9, 1.0), (-0.1, -0.9, 1.0), (-0.9, -0.1, 1.0)], z=0.25)
    rast, _ = render.rasterize(pos, TRI, (16, 20))
    cov = rast[0, ..., 3] > 0
    rows, cols = cov.nonzero().unbind(1)
    assert rows.max() < 8 and cols.max() < 10 and cov[1, 1] and not cov[0, 0]
    # Barycentrics at pixel centre (px, py) equal the analytic ones at ((2px+1)/W-1, (2py+1)/H-1).
    px, py = 2, 3
    x, y = (2 * px + 1) / 20 - 1, (2 * py + 1) / 16 - 1
    u = (x - (-0.9)) / 0.8  # weight of vertex 1 along x
    v = (y - (-0.9)) / 0.8  # weight of vertex 2 along y
    assert torch.allclose(rast[0, py, px, :2], torch.tensor([1 - u - v, u]), atol=1e-5)
    assert rast[0, py, px, 2].item() == pytest.approx(0.25, abs=1e-6)
    assert rast[0, py, px, 3].item() == 1.0
    assert (rast[0][~cov] == 0).all()


def test_depth_order_near_plane_and_perspective() -> None:
    # Two overlapping triangles: the one with smaller z/w wins regardless of draw order.
    near = _tri_pos([(-1, -1, 2.0), (1, -1, 1.0), (-1, 1, 3.0)], z=-0.5)
    far = _tri_pos([(-1, -1, 1.0), (1, -1, 1.0), (-1, 1, 1.0)], z=0.5)
    pos = torch.cat([far, near], 1)
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]])
    rast, _ = render.rasterize(pos, tri, (8, 8))
    assert (rast[0, 0, 0, 3] == 2).item()
    # Beyond the near plane (z/w < -1) nothing is drawn.
    clipped = _tri_pos([(-1, -1, 1.0), (1, -1, 1.0), (-1, 1, 1.0)], z=-1.5)
    assert (render.rasterize(clipped, TRI, (8, 8))[0] == 0).all()
    # Perspective-correct barycentrics: the interpolated clip-space point projects onto the
    # pixel centre it was computed for.
    pos = _tri_pos([(-1, -1, 1.0), (3, -1, 4.0), (-1, 3, 2.0)])
    rast, _ = render.rasterize(pos, TRI, (8, 8))
    p, _ = render.interpolate(pos[0], rast, TRI)
    cov = rast[0, ..., 3] > 0
    centres = (2 * torch.arange(8) + 1) / 8 - 1
    assert torch.allclose((p[0, ..., 0] / p[0, ..., 3])[cov], centres.expand(8, 8)[cov], atol=1e-5)
    assert torch.allclose((p[0, ..., 1] / p[0, ..., 3])[cov], centres[:, None].expand(8, 8)[cov],
                          atol=1e-5)


def _fd_grad(f, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Central finite differences of scalar ``f`` w.r.t. every entry of ``x`` (float64 math)."""
    g = torch.zeros_like(x, dtype=torch.float64)
    flat = x.view(-1)
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + eps
        fp = f(x).double()
        flat[i] = old - eps
        fm = f(x).double()
        flat[i] = old
        g.view(-1)[i] = (fp - fm) / (2 * eps)
    return g


def _assert_close_grad(analytic: torch.Tensor, numeric: torch.Tensor, rtol: float) -> None:
    err = (analytic.double() - numeric).norm() / numeric.norm().clamp_min(1e-12)
    assert err < rtol, f"relative gradient error {err:.3e}"


def test_rasterize_interpolate_gradients_match_finite_differences() -> None:
    pos = _tri_pos([(-0.8, -0.7, 1.3), (0.9, -0.5, 1.0), (-0.4, 0.8, 1.7)], z=0.1)
    attr = torch.rand(1, 3, 2)
    wimg = torch.rand(1, 24, 24, 2)
    wdb = torch.rand(1, 24, 24, 4)
    ids0 = render.rasterize(pos, TRI, (24, 24))[0][..., 3]

    def loss(p: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        rast, db = render.rasterize(p, TRI, (24, 24))
        assert torch.equal(rast[..., 3], ids0)  # FD steps must not change coverage
        out, da = render.interpolate(a, rast, TRI, rast_db=db, diff_attrs="all")
        return (out * wimg).sum() + 0.01 * (da * wdb).sum() + (db * wdb).sum() * 0.01

    p = pos.clone().requires_grad_(True)
    a = attr.clone().requires_grad_(True)
    loss(p, a).backward()
    _assert_close_grad(p.grad, _fd_grad(lambda x: loss(x, attr), pos.clone(), 2e-4), 2e-2)
    _assert_close_grad(a.grad, _fd_grad(lambda x: loss(pos, x), attr.clone(), 1e-2), 1e-3)


def test_antialias_silhouette_gradients_match_finite_differences() -> None:
    # Constant colour: only the antialiasing blend depends on the vertex positions.
    pos = _tri_pos([(-0.83, -0.71, 1.0), (0.77, -0.52, 1.0), (-0.31, 0.69, 1.0)])
    color = torch.tensor([0.9, 0.3, 0.5]).view(1, 1, 1, 3).expand(1, 20, 20, 3).contiguous()
    wimg = torch.rand(1, 20, 20, 3)
    ids0 = render.rasterize(pos, TRI, (20, 20))[0][..., 3]

    def loss(p: torch.Tensor) -> torch.Tensor:
        rast, _ = render.rasterize(p, TRI, (20, 20))
        assert torch.equal(rast[..., 3], ids0)
        img = color * (rast[..., 3:] > 0)
        return (render.antialias(img, rast, p, TRI) * wimg).sum()

    p = pos.clone().requires_grad_(True)
    loss(p).backward()
    assert p.grad.abs().sum() > 0
    _assert_close_grad(p.grad, _fd_grad(loss, pos.clone(), 1e-4), 3e-2)


def test_antialias_blends_edge_pixels_and_leaves_interior() -> None:
    pos = _tri_pos([(-0.83, -0.71, 1.0), (0.77, -0.52, 1.0), (-0.31, 0.69, 1.0)])
    rast, _ = render.rasterize(pos, TRI, (32, 32))
    img = (rast[..., 3:] > 0).float()
    out = render.antialias(img, rast, pos, TRI)
    changed = (out - img).abs() > 1e-6
    assert changed.any() and (out >= 0).all() and (out <= 1).all()
    # Only pixels next to the silhouette change; an interior pixel keeps its value.
    assert out[0, 10, 12, 0] == img[0, 10, 12, 0]


def test_topology_hash_pairs_opposite_vertices() -> None:
    tri = torch.tensor([[0, 1, 2], [2, 1, 3]])
    topo = render.antialias_construct_topology_hash(tri)
    # Edge 0 of triangle 0 is (1, 2), shared with triangle 1 whose opposite vertex is 3.
    assert topo.tolist() == [[3, -1, -1], [-1, -1, 0]]


def test_texture_bilinear_wrap_clamp_zero_and_nearest() -> None:
    tex = torch.arange(12.0).view(1, 3, 4, 1)
    # Texel centres reproduce texel values exactly.
    uv = torch.tensor([[(i + 0.5) / 4, (j + 0.5) / 3] for j in range(3) for i in range(4)])
    out = render.texture(tex, uv.view(1, 3, 4, 2), filter_mode="linear")
    assert torch.allclose(out, tex)
    # Half-way between texel 3 and (wrapped) texel 0 on row 0.
    mid = torch.tensor([[[[1.0, 0.5 / 3]]]])
    assert render.texture(tex, mid, boundary_mode="wrap").item() == pytest.approx(1.5)
    assert render.texture(tex, mid, boundary_mode="clamp").item() == pytest.approx(3.0)
    assert render.texture(tex, mid, boundary_mode="zero").item() == pytest.approx(1.5)
    assert render.texture(tex, torch.tensor([[[[0.3, 0.9]]]]), filter_mode="nearest").item() == 9.0


def test_texture_mipmap_levels_and_gradients() -> None:
    tex = torch.rand(1, 16, 16, 3, requires_grad=True)
    uv = torch.rand(1, 4, 4, 2)
    # A footprint of 4 texels per pixel selects level 2 = 4x4 box average.
    uv_da = torch.tensor([4 / 16, 0.0, 0.0, 4 / 16]).expand(1, 4, 4, 4)
    out = render.texture(tex, uv, uv_da=uv_da, filter_mode="linear-mipmap-nearest",
                         boundary_mode="clamp")
    lvl2 = torch.nn.functional.avg_pool2d(tex.permute(0, 3, 1, 2), 4).permute(0, 2, 3, 1)
    ref = render.texture(lvl2, uv, filter_mode="linear", boundary_mode="clamp")
    assert torch.allclose(out, ref, atol=1e-6)
    # Trilinear between levels 1 and 2 at level 1.5; gradients reach tex, uv and uv_da.
    uvg = uv.clone().requires_grad_(True)
    dag = (uv_da * 2 ** -0.5).clone().requires_grad_(True)
    out = render.texture(tex, uvg, uv_da=dag, boundary_mode="wrap")
    out.sum().backward()
    assert tex.grad.abs().sum() > 0 and uvg.grad.abs().sum() > 0 and dag.grad.abs().sum() > 0
    levels = render.texture_construct_mip(tex.detach())
    assert [t.shape[1] for t in levels] == [16, 8, 4, 2, 1]


def test_range_mode_matches_instance_mode() -> None:
    pos = _tri_pos([(-0.8, -0.7, 1.3), (0.9, -0.5, 1.0), (-0.4, 0.8, 1.7)])[0]
    pos = torch.cat([pos, pos * torch.tensor([1.0, -1.0, 1.0, 1.0])])
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]])
    ranges = torch.tensor([[0, 1], [1, 1]], dtype=torch.int32)
    rast_r, _ = render.rasterize(pos, tri, (12, 12), ranges=ranges)
    rast_0, _ = render.rasterize(pos[None, :3], tri[:1], (12, 12))
    assert torch.equal(rast_r[0], rast_0[0])
    assert set(rast_r[1, ..., 3].unique().tolist()) == {0.0, 2.0}


def test_backends_and_auto_dispatch() -> None:
    assert "cpu" in render.available_backends()
    assert render.visibility_engine() in ("c", "gl", "torch")
    with pytest.raises(ValueError):
        render.rasterize(torch.zeros(1, 3, 4), TRI, (4, 4), backend="vulkan")
    assert math.isfinite(render.rasterize(torch.zeros(1, 3, 4), TRI, (4, 4))[0].sum().item())
