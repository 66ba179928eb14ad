"""Visibility agreement between independent rasterisers on random meshes.

The CPU path takes visibility from our C rasteriser (double-precision homogeneous edge
functions, our own bounding-box traversal and depth test). The reference is OpenGL through
Mesa's llvmpipe: a different implementation in every respect that matters here (fixed-point
sub-pixel snapping, its own clipper, fill rules, float32 interpolated depth, its own depth
test), sharing only the specification of the problem. Agreement of triangle ids on >= 99.9% of
covered pixels and of depth within 1e-5 therefore checks our conventions (pixel centres, row
order, z/w) and coverage against an outside authority. Residual disagreements are pixels whose
centre lies within llvmpipe's 1/256-pixel snapping of an edge. The pure-torch engine, which shares
the C engine's rules, must agree with it exactly.
"""

from __future__ import annotations

import math

import pytest
import torch

from a3d_mesh import render
from a3d_mesh.render import _raster_c, _raster_gl


def _perspective(fovy_deg: float = 40.0, near: float = 0.1, far: float = 10.0) -> torch.Tensor:
    f = 1.0 / math.tan(math.radians(fovy_deg) / 2)
    return torch.tensor([[f, 0, 0, 0], [0, f, 0, 0],
                         [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
                         [0, 0, -1, 0]])


def _blob(sub: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A randomly bumped, rotated, shifted icosphere: verts ``[V, 3]``, faces ``[F, 3]``."""
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=sub)
    v = torch.tensor(m.vertices, dtype=torch.float32)
    v = v * (1 + 0.25 * torch.randn(v.shape[0], 1, generator=gen)).clamp(0.5, 1.5)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen))
    v = v @ q.T * 0.6 + (torch.rand(3, generator=gen) - 0.5) * 1.2
    return v, torch.tensor(m.faces, dtype=torch.int64)


def _scene(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three interpenetrating blobs in front of a perspective camera: ``pos [1, V, 4]``, ``tri``."""
    gen = torch.Generator().manual_seed(seed)
    vs, fs, off = [], [], 0
    for sub in (2, 3, 3):
        v, f = _blob(sub, gen)
        vs.append(v)
        fs.append(f + off)
        off += v.shape[0]
    v = torch.cat(vs) + torch.tensor([0.0, 0.0, -3.5])
    pos = torch.cat([v, torch.ones(v.shape[0], 1)], 1) @ _perspective().T
    return pos[None], torch.cat(fs)


needs_gl = pytest.mark.skipif(not _raster_gl.available(), reason="no EGL/OpenGL context")
needs_c = pytest.mark.skipif(not _raster_c.available(), reason="no C compiler")


@needs_gl
@needs_c
@pytest.mark.parametrize("seed,res", [(0, 256), (1, 192), (2, 320)])
def test_c_visibility_agrees_with_opengl(seed: int, res: int) -> None:
    pos, tri = _scene(seed)
    ids_gl, z_gl = render.visibility(pos, tri, (res, res), engine="gl")
    ids_c, _ = render.visibility(pos, tri, (res, res), engine="c")
    covered = (ids_gl >= 0) | (ids_c >= 0)
    assert covered.sum() > 0.1 * res * res
    agree = (ids_gl == ids_c)[covered].float().mean().item()
    assert agree >= 0.999, f"triangle ids agree on {agree:.5f} of covered pixels"
    # Depth of the differentiable raster output against OpenGL's, where both see one triangle.
    rast, _ = render.rasterize(pos, tri, (res, res), backend="cpu")
    same = (ids_gl == ids_c) & (ids_gl >= 0)
    assert (rast[..., 2][same] - z_gl[same]).abs().max().item() < 1e-5
    assert torch.equal(rast[..., 3].long() - 1, ids_c)


@needs_c
def test_torch_engine_matches_c_engine_with_ranges() -> None:
    pos, tri = _scene(3)
    half = tri.shape[0] // 2
    ranges = torch.tensor([[0, half], [half, tri.shape[0] - half]])
    ids_c, z_c = render.visibility(pos[0], tri, (96, 128), ranges=ranges, engine="c")
    ids_t, z_t = render.visibility(pos[0], tri, (96, 128), ranges=ranges, engine="torch")
    assert torch.equal(ids_c, ids_t)
    hit = ids_c >= 0
    assert (z_c[hit] - z_t[hit]).abs().max().item() < 1e-6


@needs_c
def test_visibility_straddling_the_eye_plane() -> None:
    # A large floor passing under and behind the camera: vertices with w < 0 must not wrap
    # around; both engines agree and only the visible (w > 0, in front of near) part is drawn.
    v = torch.tensor([[-20.0, -1.0, 5.0], [20.0, -1.0, 5.0], [0.0, -1.0, -30.0]])
    pos = (torch.cat([v, torch.ones(3, 1)], 1) @ _perspective().T)[None]
    tri = torch.tensor([[0, 1, 2]])
    ids_c, _ = render.visibility(pos, tri, (64, 64), engine="c")
    ids_t, _ = render.visibility(pos, tri, (64, 64), engine="torch")
    assert torch.equal(ids_c, ids_t)
    if _raster_gl.available():
        ids_gl, _ = render.visibility(pos, tri, (64, 64), engine="gl")
        assert (ids_gl == ids_c).float().mean().item() >= 0.999
    assert (ids_c[0, :20] == 0).any() and (ids_c[0, 40:] == -1).all()  # floor below horizon only
