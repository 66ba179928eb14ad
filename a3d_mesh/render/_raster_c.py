"""Visibility (triangle id + depth per pixel) from a small C z-buffer rasteriser, built at first use.

Design note: the C source below is compiled once with the system C compiler (see
:mod:`._cbuild`) into a per-user cache directory and loaded with :mod:`ctypes`. Exactness:
edge functions are evaluated in double precision in homogeneous clip space (the same 2D
homogeneous formulation nvdiffrast's pixel shader uses), so triangles that cross ``w = 0`` need
no explicit clipping, and points outside ``-1 <= z/w <= 1`` (near/far planes) are discarded.
Pixel ``(px, py)`` samples clip-space ``x = (2 px + 1) / W - 1``, ``y = (2 py + 1) / H - 1``
(row 0 is ``y = -1``, nvdiffrast's convention). The nearest ``z/w`` wins; on exact depth ties
the triangle drawn first (lower index) is kept. Coverage is inclusive on edges, so shared edges
of a watertight mesh never leave gaps (double coverage is resolved by the depth test).

If no compiler is available or the build fails, :func:`available` returns False and the caller
falls back to another visibility backend.
"""

from __future__ import annotations

import ctypes

import torch

from . import _cbuild

_C_SOURCE = r"""
#include <stdint.h>
#include <math.h>

static void raster_one(const float* pos, const int64_t* tri, int64_t t_begin, int64_t t_end,
                       int64_t V, int H, int W, int64_t* out_id, float* out_z)
{
    for (int64_t i = 0; i < (int64_t)H * W; ++i) { out_id[i] = -1; out_z[i] = INFINITY; }
    for (int64_t t = t_begin; t < t_end; ++t) {
        int64_t i0 = tri[3 * t], i1 = tri[3 * t + 1], i2 = tri[3 * t + 2];
        if (i0 < 0 || i1 < 0 || i2 < 0 || i0 >= V || i1 >= V || i2 >= V) continue;
        const float* p0 = pos + 4 * i0; const float* p1 = pos + 4 * i1; const float* p2 = pos + 4 * i2;
        double x0 = p0[0], y0 = p0[1], z0 = p0[2], w0 = p0[3];
        double x1 = p1[0], y1 = p1[1], z1 = p1[2], w1 = p1[3];
        double x2 = p2[0], y2 = p2[1], z2 = p2[2], w2 = p2[3];
        if (w0 <= 0.0 && w1 <= 0.0 && w2 <= 0.0) continue; /* wholly behind the eye */
        int xa = 0, xb = W - 1, ya = 0, yb = H - 1;
        if (w0 > 0.0 && w1 > 0.0 && w2 > 0.0) {
            /* Pixel-index space: px = (ndc + 1) * W / 2 - 0.5. */
            double sx0 = (x0 / w0 + 1.0) * 0.5 * W - 0.5, sy0 = (y0 / w0 + 1.0) * 0.5 * H - 0.5;
            double sx1 = (x1 / w1 + 1.0) * 0.5 * W - 0.5, sy1 = (y1 / w1 + 1.0) * 0.5 * H - 0.5;
            double sx2 = (x2 / w2 + 1.0) * 0.5 * W - 0.5, sy2 = (y2 / w2 + 1.0) * 0.5 * H - 0.5;
            double mnx = fmin(sx0, fmin(sx1, sx2)), mxx = fmax(sx0, fmax(sx1, sx2));
            double mny = fmin(sy0, fmin(sy1, sy2)), mxy = fmax(sy0, fmax(sy1, sy2));
            if (!(mxx >= 0.0 && mny <= H - 1.0 && mxy >= 0.0 && mnx <= W - 1.0)) continue;
            /* One pixel of slack: the exact edge test below decides coverage. */
            xa = (int)fmax(0.0, floor(mnx)); xb = (int)fmin(W - 1.0, ceil(mxx));
            ya = (int)fmax(0.0, floor(mny)); yb = (int)fmin(H - 1.0, ceil(mxy));
        }
        /* a_k(fx, fy) = A_k + B_k fx + C_k fy: 2D homogeneous edge functions (bilinear terms cancel). */
        double A0 = x1 * y2 - y1 * x2, B0 = y1 * w2 - w1 * y2, C0 = w1 * x2 - x1 * w2;
        double A1 = x2 * y0 - y2 * x0, B1 = y2 * w0 - w2 * y0, C1 = w2 * x0 - x2 * w0;
        double A2 = x0 * y1 - y0 * x1, B2 = y0 * w1 - w0 * y1, C2 = w0 * x1 - x0 * w1;
        for (int py = ya; py <= yb; ++py) {
            double fy = (2.0 * py + 1.0) / H - 1.0;
            for (int px = xa; px <= xb; ++px) {
                double fx = (2.0 * px + 1.0) / W - 1.0;
                double a0 = A0 + B0 * fx + C0 * fy;
                double a1 = A1 + B1 * fx + C1 * fy;
                double a2 = A2 + B2 * fx + C2 * fy;
                double at = a0 + a1 + a2;
                if (at == 0.0) continue;
                if (at > 0.0) { if (a0 < 0.0 || a1 < 0.0 || a2 < 0.0) continue; }
                else          { if (a0 > 0.0 || a1 > 0.0 || a2 > 0.0) continue; }
                double w = w0 * a0 + w1 * a1 + w2 * a2;
                if (w * at <= 0.0) continue; /* intersection behind the eye */
                double zw = (z0 * a0 + z1 * a1 + z2 * a2) / w;
                if (!(zw >= -1.0 && zw <= 1.0)) continue; /* near / far planes */
                int64_t o = (int64_t)py * W + px;
                if ((float)zw < out_z[o]) { out_z[o] = (float)zw; out_id[o] = t; }
            }
        }
    }
}

/* pos: [B or 1, V, 4]; pos_stride = V*4 (instance mode) or 0 (range mode).
   ranges: [B, 2] (start, count) or NULL (all triangles). */
void a3d_raster(const float* pos, int64_t pos_stride, int64_t V, const int64_t* tri, int64_t T,
                const int64_t* ranges, int B, int H, int W, int64_t* out_id, float* out_z)
{
    #pragma omp parallel for schedule(dynamic, 1) if(B > 1)
    for (int b = 0; b < B; ++b) {
        int64_t t0 = 0, t1 = T;
        if (ranges) { t0 = ranges[2 * b]; t1 = t0 + ranges[2 * b + 1]; if (t0 < 0) t0 = 0; if (t1 > T) t1 = T; }
        raster_one(pos + b * pos_stride, tri, t0, t1, V, H, W,
                   out_id + (int64_t)b * H * W, out_z + (int64_t)b * H * W);
    }
}
"""

_LIB: ctypes.CDLL | None = None
_LIB_ERROR: str | None = None
_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int


def _load() -> ctypes.CDLL | None:
    """Build (once, cached by source hash) and load the library; None with the reason kept."""
    global _LIB, _LIB_ERROR
    if _LIB is None and _LIB_ERROR is None:
        sig = {"a3d_raster": (None, [_P, _I64, _I64, _P, _I64, _P, _INT, _INT, _INT, _P, _P])}
        _LIB, _LIB_ERROR = _cbuild.load("a3d_raster", _C_SOURCE, sig, openmp=True)
    return _LIB


def available() -> bool:
    """True when the C rasteriser is built (or can be built) and loads."""
    return _load() is not None


def unavailable_reason() -> str | None:
    """Why :func:`available` is False (compiler missing, build error), else None."""
    _load()
    return _LIB_ERROR


def visibility(pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int],
               ranges: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest triangle and its depth per pixel.

    Args:
        pos: clip-space vertices, ``[B, V, 4]`` (instance mode) or ``[V, 4]`` with ``ranges``.
        tri: ``[T, 3]`` integer vertex indices.
        resolution: ``(H, W)``.
        ranges: ``[B, 2]`` int (first triangle, triangle count) per image, range mode only.
    Returns:
        ``(tri_id [B, H, W] int64`` (0-based index into ``tri``, -1 = empty),
        ``depth [B, H, W] float32`` (z/w, +inf where empty)), on ``pos``'s device.
    """
    lib = _load()
    if lib is None:
        raise RuntimeError(f"C rasteriser unavailable: {_LIB_ERROR}")
    H, W = int(resolution[0]), int(resolution[1])
    p = pos.detach().to("cpu", torch.float32).contiguous()
    t = tri.detach().to("cpu", torch.int64).contiguous()
    if ranges is not None:
        r = ranges.detach().to("cpu", torch.int64).contiguous()
        B, stride, V, r_ptr = r.shape[0], 0, p.shape[0], r.data_ptr()
    else:
        r, B, stride, V = None, p.shape[0], p.shape[1] * 4, p.shape[1]
        r_ptr = None
    ids = torch.empty((B, H, W), dtype=torch.int64)
    depth = torch.empty((B, H, W), dtype=torch.float32)
    lib.a3d_raster(p.data_ptr(), stride, V, t.data_ptr(), t.shape[0], r_ptr, B, H, W,
                   ids.data_ptr(), depth.data_ptr())
    return ids.to(device=pos.device, dtype=torch.int64), depth.to(pos.device)
