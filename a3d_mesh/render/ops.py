"""Differentiable mesh rendering ops with nvdiffrast semantics and an exact CPU path.

Backends (``backend=`` on every op):

* ``"cuda"``: nvdiffrast (``nvdiffrast.torch``, imported lazily; one ``RasterizeCudaContext``
  per device, cached). Requires CUDA tensors.
* ``"cpu"``: this package's torch implementation. It runs on any device (CPU in CI); only the
  visibility pass leaves the device.
* ``"auto"``: ``"cuda"`` when nvdiffrast imports, was not switched off (``_nvdr.disable``, which
  the preflight calls when it fails or disagrees with the CPU path) and the inputs are CUDA
  tensors, else ``"cpu"``.

CPU design. Rasterisation is split into (1) *visibility*, which triangle is nearest at each
pixel centre, a discrete, non-differentiable question answered by a fast engine, and (2) the
*differentiable* part, barycentrics, ``z/w`` and their pixel derivatives recomputed in float32
torch from the clip-space vertices of the visible triangle with nvdiffrast's formulas (and its
gradient conventions), so autograd reaches ``pos`` exactly as nvdiffrast's backward kernel does.
Visibility engines, first available wins (``A3D_RENDER_VISIBILITY=c|gl|torch`` forces one):

1. ``c``: a C z-buffer rasteriser compiled at first use with the system compiler and loaded via
   ctypes (no ninja, no torch headers), double-precision homogeneous edge functions;
2. ``gl``: OpenGL through moderngl on a headless EGL context (llvmpipe on CPU machines);
3. ``torch``: a vectorised pure-torch rasteriser (always works, slower).

The tests check ``c`` against ``gl`` (independent implementations: ours vs Mesa's) and ``torch``.

Pixel math. On CPU tensors the differentiable part (barycentrics and ``rast_db`` with their
backward, ``interpolate`` without ``diff_attrs``, ``antialias``) runs in C kernels built the same
way as the ``c`` engine (:mod:`._pixel_c`, :mod:`._antialias_c`): one pass over the image instead
of dozens of full-size torch temporaries, gathers and threaded launches. They follow the torch
reference (:mod:`._bary`, :mod:`._antialias`) operation for operation, so forward values are
bit-identical, and their hand-derived backward passes equal the reference's autograd gradients
up to its float32 rounding (they differentiate in double precision). The torch reference runs
instead when no compiler is available, on non-CPU devices, for ``diff_attrs``, for non-float32
colours/attributes, or when ``A3D_RENDER_KERNELS=torch``. The C kernels do not support double
backward (``create_graph=True`` through them); set ``A3D_RENDER_KERNELS=torch`` for that.

Conventions (nvdiffrast's): ``pos`` is clip space; pixel ``(px, py)`` samples
``x = (2 px + 1) / W - 1``, ``y = (2 py + 1) / H - 1``; row 0 is clip ``y = -1``;
``rast = (u, v, z/w, triangle_id + 1)``, all zero where no triangle covers the pixel; the third
barycentric belongs to ``tri[:, 2]``: ``attr = u a0 + v a1 + (1 - u - v) a2``. Triangle ids are
stored as float32, exact below 2**24 triangles.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch

from . import (_antialias, _antialias_c, _bary, _nvdr, _pixel_c, _raster_c, _raster_gl,
               _raster_torch, _texture)

_ENGINES: dict[str, tuple[Callable[[], bool], Callable[..., tuple[torch.Tensor, torch.Tensor]]]] = {
    "c": (_raster_c.available, _raster_c.visibility),
    "gl": (_raster_gl.available, _raster_gl.visibility),
    "torch": (lambda: True, _raster_torch.visibility),
}


def available_backends() -> list[str]:
    """Backends usable here: always ``"cpu"``; ``"cuda"`` when nvdiffrast and CUDA are present."""
    return ["cpu", "cuda"] if _nvdr.available() else ["cpu"]


def visibility_engine() -> str:
    """Name of the visibility engine the CPU path uses here (``"c"``, ``"gl"`` or ``"torch"``)."""
    forced = os.environ.get("A3D_RENDER_VISIBILITY")
    if forced:
        if forced not in _ENGINES:
            raise ValueError(f"A3D_RENDER_VISIBILITY must be one of {sorted(_ENGINES)}")
        return forced
    for name, (ok, _) in _ENGINES.items():
        if ok():
            return name
    return "torch"


def visibility(pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int],
               ranges: torch.Tensor | None = None,
               engine: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest triangle per pixel: ``(tri_id [B,H,W] int64, -1 empty; depth [B,H,W] z/w, inf empty)``.

    ``engine`` picks ``"c"``, ``"gl"`` or ``"torch"`` (default: :func:`visibility_engine`).
    """
    return _ENGINES[engine or visibility_engine()][1](pos, tri, resolution, ranges)


def _use_cuda(backend: str, *tensors: torch.Tensor | None) -> bool:
    """Resolve ``backend`` for tensors: True for nvdiffrast, False for the CPU path."""
    if backend not in ("auto", "cpu", "cuda"):
        raise ValueError(f"backend must be 'auto', 'cpu' or 'cuda', got {backend!r}")
    if backend == "cpu":
        return False
    on_cuda = all(t.is_cuda for t in tensors if t is not None)
    if backend == "cuda":
        if not _nvdr.available() or not on_cuda:
            raise RuntimeError("backend='cuda' needs nvdiffrast and CUDA tensors")
        return True
    return on_cuda and _nvdr.available()


def _check_pos(pos: torch.Tensor, ranges: torch.Tensor | None) -> None:
    if ranges is None and (pos.dim() != 3 or pos.shape[-1] != 4):
        raise ValueError(f"pos must be [B, V, 4] without ranges, got {tuple(pos.shape)}")
    if ranges is not None and (pos.dim() != 2 or pos.shape[-1] != 4 or ranges.dim() != 2):
        raise ValueError("with ranges, pos must be [V, 4] and ranges [B, 2]")


def rasterize(pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int],
              ranges: torch.Tensor | None = None, grad_db: bool = True,
              backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Rasterise triangles (nvdiffrast ``rasterize`` without the context argument).

    Args:
        pos: clip-space vertices, float32 ``[B, V, 4]``, or ``[V, 4]`` with ``ranges``.
        tri: ``[T, 3]`` int64 or int32 vertex indices (counter-clockwise is not required:
            both faces are drawn).
        resolution: ``(H, W)`` in pixels.
        ranges: ``[B, 2]`` int ``(first triangle, count)`` per image (range mode).
        grad_db: propagate gradients of ``rast_db`` into ``pos``.
        backend: ``"auto"``, ``"cpu"`` or ``"cuda"``.
    Returns:
        ``rast [B, H, W, 4]`` = (u, v, z/w, triangle_id + 1), zero where empty, and
        ``rast_db [B, H, W, 4]`` = (du/dX, du/dY, dv/dX, dv/dY) in pixel units.
    """
    _check_pos(pos, ranges)
    if _use_cuda(backend, pos, tri):
        return _nvdr.rasterize(pos, tri, resolution, ranges, grad_db)
    tri64 = tri.to(device=pos.device, dtype=torch.int64)
    tri_id, _ = visibility(pos, tri64, resolution, ranges)
    if _pixel_c.usable(pos):
        return _pixel_c.barycentrics(pos, tri64, tri_id, grad_db=grad_db)
    return _bary.barycentrics(pos, tri64, tri_id.to(pos.device), grad_db=grad_db)


def interpolate(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor,
                rast_db: torch.Tensor | None = None, diff_attrs: list[int] | str | None = None,
                backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Interpolate vertex attributes over the raster (nvdiffrast ``interpolate``).

    Args:
        attr: ``[B, V, C]``, ``[1, V, C]`` or ``[V, C]`` float32 per-vertex attributes.
        rast: ``[B, H, W, 4]`` from :func:`rasterize`.
        tri: ``[T, 3]`` int vertex indices.
        rast_db: ``[B, H, W, 4]`` from :func:`rasterize`, needed with ``diff_attrs``.
        diff_attrs: attribute channel indices (or ``"all"``) whose pixel derivatives to output.
    Returns:
        ``out [B, H, W, C]`` and ``out_da [B, H, W, 2 K]`` (``dA/dX, dA/dY`` per requested
        channel) or an empty tensor when ``diff_attrs`` is None.
    """
    if _use_cuda(backend, attr, rast, tri):
        return _nvdr.interpolate(attr, rast, tri, rast_db, diff_attrs)
    if (diff_attrs is None and attr.dtype == torch.float32 and rast.dtype == torch.float32
            and _pixel_c.usable(attr, rast)):
        return _pixel_c.interpolate(attr, rast, tri), torch.zeros(0, device=attr.device)
    return _bary.interpolate(attr, rast, tri.to(device=attr.device, dtype=torch.int64), rast_db,
                             diff_attrs)


def texture(tex: torch.Tensor, uv: torch.Tensor, uv_da: torch.Tensor | None = None,
            mip_level_bias: torch.Tensor | None = None, mip: Any = None,
            filter_mode: str = "auto", boundary_mode: str = "wrap",
            max_mip_level: int | None = None, backend: str = "auto") -> torch.Tensor:
    """Sample a 2D texture (nvdiffrast ``texture``, without cube maps).

    Args:
        tex: ``[Bt, Ht, Wt, C]`` with ``Bt`` 1 or B; row 0 is ``v = 0``.
        uv: ``[B, H, W, 2]`` texture coordinates, ``[0, 1]`` spans the texture.
        uv_da: ``[B, H, W, 4]`` = (du/dX, du/dY, dv/dX, dv/dY) for mip level selection.
        mip_level_bias: ``[B, H, W]`` added to the mip level.
        mip: a prebuilt pyramid from :func:`texture_construct_mip` (reused across calls).
        filter_mode: ``"nearest"``, ``"linear"``, ``"linear-mipmap-nearest"``,
            ``"linear-mipmap-linear"``, or ``"auto"`` (mipmapped when ``uv_da`` or
            ``mip_level_bias`` is given, else linear).
        boundary_mode: ``"wrap"``, ``"clamp"`` or ``"zero"``.
        max_mip_level: cap on the number of mip levels below level 0.
    Returns:
        ``[B, H, W, C]`` samples.
    """
    if _use_cuda(backend, tex, uv):
        return _nvdr.texture(tex, uv, uv_da, mip_level_bias, mip, filter_mode, boundary_mode,
                             max_mip_level)
    return _texture.texture(tex, uv, uv_da, mip_level_bias, mip, filter_mode, boundary_mode,
                            max_mip_level)


def texture_construct_mip(tex: torch.Tensor, max_mip_level: int | None = None) -> list[torch.Tensor]:
    """Mip pyramid of ``tex [Bt, Ht, Wt, C]`` for :func:`texture`'s ``mip`` (level 0 first)."""
    return _texture.build_mip(tex, max_mip_level)


def antialias_construct_topology_hash(tri: torch.Tensor) -> torch.Tensor:
    """Edge adjacency of ``tri [T, 3]`` for :func:`antialias` (``[T, 3]`` int64, reusable)."""
    return _antialias.topology_hash(tri)


def antialias(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor,
              topology_hash: Any = None, pos_gradient_boost: float = 1.0,
              backend: str = "auto") -> torch.Tensor:
    """Analytic antialiasing of silhouette edges (nvdiffrast ``antialias``).

    Args:
        color: ``[B, H, W, C]`` shaded image.
        rast: ``[B, H, W, 4]`` from :func:`rasterize` with the same ``pos``/``tri``.
        pos: clip-space ``[B, V, 4]`` or ``[V, 4]`` (range mode).
        tri: ``[T, 3]`` int.
        topology_hash: from :func:`antialias_construct_topology_hash` (computed when None).
        pos_gradient_boost: multiplier on gradients w.r.t. ``pos``.
    Returns:
        ``[B, H, W, C]`` antialiased colours; gradients reach ``color`` and ``pos``
        (silhouette-edge crossings).
    """
    if _use_cuda(backend, color, rast, pos, tri):
        return _nvdr.antialias(color, rast, pos, tri, topology_hash, pos_gradient_boost)
    topo = topology_hash if isinstance(topology_hash, torch.Tensor) else None
    if (color.dtype == torch.float32 and _pixel_c.usable(color, rast, pos)
            and _antialias_c.available()):
        return _antialias_c.antialias(color, rast, pos, tri, topo, pos_gradient_boost)
    return _antialias.antialias(color, rast, pos, tri.to(device=color.device, dtype=torch.int64),
                                topo, pos_gradient_boost)
