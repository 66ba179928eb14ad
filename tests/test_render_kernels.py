"""C pixel kernels (rasterize/interpolate/antialias math) against the torch reference.

The C kernels must reproduce the torch reference's forward values bit for bit and its gradients
up to the float32 rounding of the reference (the kernels differentiate in double precision).
"""

from __future__ import annotations

import math

import pytest
import torch

from a3d_mesh import render
from a3d_mesh.render import _antialias, _antialias_c, _pixel_c

needs_c = pytest.mark.skipif(not (_pixel_c.usable(torch.zeros(1)) and _antialias_c.available()),
                             reason="no C compiler")
RES = (40, 56)  # H, W: non-square, W not a power of two (2 / W is inexact in float32)


def _sphere(n_lat: int = 9, n_lon: int = 13) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed bumpy UV sphere: ``verts [V, 3]`` float32 and ``faces [F, 3]`` int64 (outward)."""
    th = torch.linspace(0, math.pi, n_lat)[1:-1]
    ph = torch.arange(n_lon) * (2 * math.pi / n_lon)
    t, p = torch.meshgrid(th, ph, indexing="ij")
    ring = torch.stack([t.sin() * p.sin(), t.cos(), t.sin() * p.cos()], -1).reshape(-1, 3)
    v = torch.cat([torch.tensor([[0.0, 1.0, 0.0]]), ring, torch.tensor([[0.0, -1.0, 0.0]])])
    v = v * (1 + 0.1 * torch.sin(5 * v[:, :1]) * torch.cos(3 * v[:, 1:2]))
    R, L = n_lat - 2, n_lon
    idx = lambda r, c: 1 + r * L + c % L  # noqa: E731
    f = [[0, idx(0, c + 1), idx(0, c)] for c in range(L)]
    for r in range(R - 1):
        for c in range(L):
            f += [[idx(r, c), idx(r, c + 1), idx(r + 1, c)],
                  [idx(r, c + 1), idx(r + 1, c + 1), idx(r + 1, c)]]
    f += [[v.shape[0] - 1, idx(R - 1, c), idx(R - 1, c + 1)] for c in range(L)]
    return v, torch.tensor(f)


def _clip(v: torch.Tensor, shift: tuple[float, float], dist: float) -> torch.Tensor:
    """Perspective clip coordinates ``[V, 4]`` of ``v`` moved by ``shift`` and ``dist`` away."""
    x, y, z = v[:, 0] + shift[0], v[:, 1] + shift[1], v[:, 2] - dist
    f, n, fa = 1.0 / math.tan(math.radians(25)), 0.1, 10.0
    return torch.stack([f * x * 0.8, f * y, (-(fa + n) * z - 2 * fa * n) / (fa - n), -z], -1)


def _scene(range_mode: bool) -> dict[str, torch.Tensor]:
    """Two images of two overlapping spheres, as instance (``pos [2, V, 4]``) or range mode."""
    torch.manual_seed(3)
    v, f = _sphere()
    a = _clip(v, (-0.3, 0.1), 3.0)
    b = _clip(v * 0.7, (0.5, -0.2), 3.6)
    tri = torch.cat([f, f + v.shape[0]])
    if range_mode:
        pos = torch.cat([a, b, _clip(v, (0.2, 0.3), 2.5), _clip(v, (-0.4, -0.1), 3.2)])
        tri = torch.cat([tri, tri + 2 * v.shape[0]])
        ranges = torch.tensor([[0, 2 * f.shape[0]], [2 * f.shape[0], 2 * f.shape[0]]])
        attr = torch.rand(pos.shape[0], 3)
        return {"pos": pos, "tri": tri, "ranges": ranges, "attr": attr}
    pos = torch.stack([torch.cat([a, b]), torch.cat([b, a]) * 1.01])
    return {"pos": pos, "tri": tri, "ranges": None, "attr": torch.rand(2, pos.shape[1], 3)}


def _run(scene: dict[str, torch.Tensor], grad_db: bool) -> dict[str, torch.Tensor]:
    """Forward outputs and input gradients of rasterize -> interpolate -> antialias."""
    pos = scene["pos"].clone().requires_grad_(True)
    attr = scene["attr"].clone().requires_grad_(True)
    rast, db = render.rasterize(pos, scene["tri"], RES, ranges=scene["ranges"], grad_db=grad_db)
    img, _ = render.interpolate(attr, rast, scene["tri"])
    out = render.antialias(img, rast, pos, scene["tri"])
    gen = torch.Generator().manual_seed(7)
    w = torch.rand(out.shape, generator=gen)
    wd = torch.rand(db.shape, generator=gen)
    loss = (out * w).sum() + ((db * wd).sum() if grad_db else 0.0)
    loss.backward()
    return {"rast": rast.detach(), "db": db.detach(), "img": img.detach(), "out": out.detach(),
            "gpos": pos.grad.double(), "gattr": attr.grad.double()}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@needs_c
@pytest.mark.parametrize("range_mode", [False, True])
@pytest.mark.parametrize("grad_db", [True, False])
def test_c_kernels_match_torch_reference(monkeypatch: pytest.MonkeyPatch, range_mode: bool,
                                         grad_db: bool) -> None:
    scene = _scene(range_mode)
    c = _run(scene, grad_db)
    monkeypatch.setenv("A3D_RENDER_KERNELS", "torch")
    ref = _run(scene, grad_db)
    assert (ref["rast"][..., 3] > 0).float().mean() > 0.2  # the scene covers the image
    assert (ref["out"] != ref["img"]).any()  # and has silhouettes to antialias
    for key in ("rast", "db", "img", "out"):
        assert torch.equal(c[key], ref[key]), key
    # Gradients: equal up to the float32 rounding error of the reference.
    assert _rel(c["gattr"], ref["gattr"]) < 1e-5
    assert _rel(c["gpos"], ref["gpos"]) < 1e-5


@needs_c
def test_antialias_strided_upstream_gradient_and_boost(monkeypatch: pytest.MonkeyPatch) -> None:
    scene = _scene(False)
    pos = scene["pos"]
    rast, _ = render.rasterize(pos, scene["tri"], RES)
    img = render.interpolate(scene["attr"], rast, scene["tri"])[0]

    def grads(boost: float) -> tuple[torch.Tensor, torch.Tensor]:
        p = pos.clone().requires_grad_(True)
        c = img.clone().requires_grad_(True)
        # sum() hands antialias's backward an expanded (stride 0) gradient.
        render.antialias(c, rast, p, scene["tri"], pos_gradient_boost=boost).sum().backward()
        return p.grad, c.grad

    gp1, gc1 = grads(1.0)
    gp3, gc3 = grads(3.0)
    assert gp1.abs().sum() > 0
    assert torch.allclose(gp3, 3 * gp1, rtol=1e-5, atol=1e-6) and torch.equal(gc1, gc3)
    monkeypatch.setenv("A3D_RENDER_KERNELS", "torch")
    gp_ref, gc_ref = grads(3.0)
    assert _rel(gc3.double(), gc_ref.double()) < 1e-6
    assert _rel(gp3.double(), gp_ref.double()) < 1e-4


def test_reference_path_is_used_when_kernels_are_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("A3D_RENDER_KERNELS", "torch")
    assert not _pixel_c.usable(torch.zeros(1))
    scene = _scene(False)
    rast, _ = render.rasterize(scene["pos"], scene["tri"], RES)
    ref = _antialias.antialias(rast[..., :3].contiguous(), rast, scene["pos"], scene["tri"])
    out = render.antialias(rast[..., :3].contiguous(), rast, scene["pos"], scene["tri"])
    assert torch.equal(out, ref)


@needs_c
def test_mismatched_rast_and_tri_raise_instead_of_reading_out_of_bounds() -> None:
    scene = _scene(False)
    rast, _ = render.rasterize(scene["pos"], scene["tri"], RES)
    few = scene["tri"][:4]  # the raster names triangles beyond these
    with pytest.raises(IndexError):
        render.interpolate(scene["attr"], rast, few)
    with pytest.raises(IndexError):
        render.antialias(rast[..., :3].contiguous(), rast, scene["pos"], few)
