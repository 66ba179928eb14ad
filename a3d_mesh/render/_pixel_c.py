"""C kernels for the per-pixel math of ``rasterize`` and ``interpolate`` (CPU tensors only).

Same semantics as the torch reference in :mod:`._bary` (nvdiffrast's): the forward values
repeat the reference's float32 operations in the same order (built without FMA contraction,
see :mod:`._cbuild`), so they match it bit for bit; the backward passes are the closed-form
derivatives of the reference's *gradient path*: unclamped barycentrics with
``copysign(1e-6, area)`` added to the homogeneous area, no gradient through ``z/w``,
evaluated per pixel in double precision and accumulated into float64 vertex gradients.
One pass over the image replaces dozens of full-size torch temporaries and gathers.

Layouts: ``pos`` float32 ``[Bp, V, 4]`` with batch stride ``V * 4`` (instance mode) or 0
(range mode / shared); ``tri`` int64 ``[T, 3]``; ``tid`` int64 ``[B, H, W]`` (-1 empty);
``rast``/``rast_db`` float32 ``[B, H, W, 4]``; ``attr`` float32 ``[Ba, V, C]`` with batch
stride ``V * C`` or 0. Pixel ``(px, py)`` samples clip ``x = (2 px + 1) / W - 1``,
``y = (2 py + 1) / H - 1``.
"""

from __future__ import annotations

import ctypes
import os

import torch
from torch.autograd.function import once_differentiable

from . import _cbuild

_C_SOURCE = r"""
#include <stdint.h>
#include <string.h>
#include <math.h>

static inline float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

void a3d_bary_fwd(const float* pos, int64_t ps, const int64_t* tri, const int64_t* tid,
                  int B, int H, int W, int grad_db, float* rast, float* rdb)
{
    const float xs = (float)(2.0 / W), ys = (float)(2.0 / H);
    const float dz = grad_db ? 0.0f : -0.0f; /* the reference adds +0 (st trick) only with grad */
    for (int b = 0; b < B; ++b) for (int py = 0; py < H; ++py) {
        const float fy = (2.0f * (float)py + 1.0f) / (float)H - 1.0f;
        for (int px = 0; px < W; ++px) {
            const int64_t o = ((int64_t)b * H + py) * W + px;
            float* r = rast + 4 * o; float* d = rdb + 4 * o;
            const int64_t t = tid[o];
            if (t < 0) { memset(r, 0, 4 * sizeof(float)); memset(d, 0, 4 * sizeof(float)); continue; }
            const float fx = (2.0f * (float)px + 1.0f) / (float)W - 1.0f;
            const float* p0 = pos + b * ps + 4 * tri[3 * t];
            const float* p1 = pos + b * ps + 4 * tri[3 * t + 1];
            const float* p2 = pos + b * ps + 4 * tri[3 * t + 2];
            const float x0 = p0[0], y0 = p0[1], z0 = p0[2], w0 = p0[3];
            const float x1 = p1[0], y1 = p1[1], z1 = p1[2], w1 = p1[3];
            const float x2 = p2[0], y2 = p2[1], z2 = p2[2], w2 = p2[3];
            const float ex0 = x0 - fx * w0, ex1 = x1 - fx * w1, ex2 = x2 - fx * w2;
            const float ey0 = y0 - fy * w0, ey1 = y1 - fy * w1, ey2 = y2 - fy * w2;
            const float a0 = ex1 * ey2 - ey1 * ex2, a1 = ex2 * ey0 - ey2 * ex0, a2 = ex0 * ey1 - ey0 * ex1;
            const float at = a0 + a1 + a2;
            const float iw = 1.0f / at;
            const float b0 = clampf(a0 * iw, 0.0f, 1.0f), b1 = clampf(a1 * iw, 0.0f, 1.0f);
            const float zw = (z0 * a0 + z1 * a1 + z2 * a2) / (w0 * a0 + w1 * a1 + w2 * a2);
            const float da0dx = y2 * w1 - y1 * w2, da1dx = y0 * w2 - y2 * w0, da2dx = y1 * w0 - y0 * w1;
            const float da0dy = x1 * w2 - x2 * w1, da1dy = x2 * w0 - x0 * w2, da2dy = x0 * w1 - x1 * w0;
            const float datdx = da0dx + da1dx + da2dx, datdy = da0dy + da1dy + da2dy;
            r[0] = b0 + 0.0f; r[1] = b1 + 0.0f; r[2] = clampf(zw, -1.0f, 1.0f); r[3] = (float)(t + 1);
            d[0] = xs * iw * (b0 * datdx - da0dx) + dz;
            d[1] = ys * iw * (b0 * datdy - da0dy) + dz;
            d[2] = xs * iw * (b1 * datdx - da1dx) + dz;
            d[3] = ys * iw * (b1 * datdy - da1dy) + dz;
        }
    }
}

/* d loss / d pos into out (float32, pos's layout, npos values; accumulated in the float64
   scratch gpos) from gr (d/d rast, may be NULL) and gd (d/d rast_db, may be NULL), reverse
   mode through the gradient path u = a0/(at+eps), v = a1/(at+eps) and the rast_db formulas. */
void a3d_bary_bwd(const float* pos, int64_t ps, const int64_t* tri, const int64_t* tid,
                  int B, int H, int W, const float* gr, const float* gd, int64_t npos,
                  double* gpos, float* out)
{
    memset(gpos, 0, npos * sizeof(double));
    const double xs = (float)(2.0 / W), ys = (float)(2.0 / H);
    for (int b = 0; b < B; ++b) for (int py = 0; py < H; ++py) {
        const double fy = (2.0f * (float)py + 1.0f) / (float)H - 1.0f;
        for (int px = 0; px < W; ++px) {
            const int64_t o = ((int64_t)b * H + py) * W + px;
            const int64_t t = tid[o];
            if (t < 0) continue;
            const double gu = gr ? gr[4 * o] : 0.0, gv = gr ? gr[4 * o + 1] : 0.0;
            const double q0 = gd ? xs * gd[4 * o] : 0.0, q1 = gd ? ys * gd[4 * o + 1] : 0.0;
            const double q2 = gd ? xs * gd[4 * o + 2] : 0.0, q3 = gd ? ys * gd[4 * o + 3] : 0.0;
            if (gu == 0.0 && gv == 0.0 && q0 == 0.0 && q1 == 0.0 && q2 == 0.0 && q3 == 0.0) continue;
            const double fx = (2.0f * (float)px + 1.0f) / (float)W - 1.0f;
            const int64_t i0 = tri[3 * t], i1 = tri[3 * t + 1], i2 = tri[3 * t + 2];
            const float* p0 = pos + b * ps + 4 * i0;
            const float* p1 = pos + b * ps + 4 * i1;
            const float* p2 = pos + b * ps + 4 * i2;
            const double x0 = p0[0], y0 = p0[1], w0 = p0[3];
            const double x1 = p1[0], y1 = p1[1], w1 = p1[3];
            const double x2 = p2[0], y2 = p2[1], w2 = p2[3];
            const double ex0 = x0 - fx * w0, ex1 = x1 - fx * w1, ex2 = x2 - fx * w2;
            const double ey0 = y0 - fy * w0, ey1 = y1 - fy * w1, ey2 = y2 - fy * w2;
            const double a0 = ex1 * ey2 - ey1 * ex2, a1 = ex2 * ey0 - ey2 * ex0, a2 = ex0 * ey1 - ey0 * ex1;
            /* The epsilon takes the sign of the float32 area, as in the reference. */
            const float fx0 = (float)x0 - (float)fx * (float)w0, fx1 = (float)x1 - (float)fx * (float)w1;
            const float fx2 = (float)x2 - (float)fx * (float)w2, fy0 = (float)y0 - (float)fy * (float)w0;
            const float fy1 = (float)y1 - (float)fy * (float)w1, fy2 = (float)y2 - (float)fy * (float)w2;
            const float atf = (fx1 * fy2 - fy1 * fx2) + (fx2 * fy0 - fy2 * fx0) + (fx0 * fy1 - fy0 * fx1);
            const double iwg = 1.0 / (a0 + a1 + a2 + copysign(1e-6, (double)atf));
            const double b0 = a0 * iwg, b1 = a1 * iwg;
            const double da0dx = y2 * w1 - y1 * w2, da1dx = y0 * w2 - y2 * w0, da2dx = y1 * w0 - y0 * w1;
            const double da0dy = x1 * w2 - x2 * w1, da1dy = x2 * w0 - x0 * w2, da2dy = x0 * w1 - x1 * w0;
            const double datdx = da0dx + da1dx + da2dx, datdy = da0dy + da1dy + da2dy;
            /* rast_db[k] = s_k * iwg * (b * datd - da): split into iwg, b, datd and da parts. */
            double giwg = q0 * (b0 * datdx - da0dx) + q1 * (b0 * datdy - da0dy)
                        + q2 * (b1 * datdx - da1dx) + q3 * (b1 * datdy - da1dy);
            const double gb0 = gu + iwg * (q0 * datdx + q1 * datdy);
            const double gb1 = gv + iwg * (q2 * datdx + q3 * datdy);
            const double gtx = iwg * (q0 * b0 + q2 * b1), gty = iwg * (q1 * b0 + q3 * b1);
            const double G0x = gtx - iwg * q0, G1x = gtx - iwg * q2, G2x = gtx;
            const double G0y = gty - iwg * q1, G1y = gty - iwg * q3, G2y = gty;
            giwg += gb0 * a0 + gb1 * a1;
            const double gat = -giwg * iwg * iwg;
            const double ga0 = gb0 * iwg + gat, ga1 = gb1 * iwg + gat, ga2 = gat;
            /* a_k are 2x2 determinants of the edge vectors (ex, ey). */
            const double gex0 = ga2 * ey1 - ga1 * ey2, gey0 = ga1 * ex2 - ga2 * ex1;
            const double gex1 = ga0 * ey2 - ga2 * ey0, gey1 = ga2 * ex0 - ga0 * ex2;
            const double gex2 = ga1 * ey0 - ga0 * ey1, gey2 = ga0 * ex1 - ga1 * ex0;
            const double gx0 = gex0 - w2 * G1y + w1 * G2y, gy0 = gey0 + w2 * G1x - w1 * G2x;
            const double gx1 = gex1 + w2 * G0y - w0 * G2y, gy1 = gey1 - w2 * G0x + w0 * G2x;
            const double gx2 = gex2 - w1 * G0y + w0 * G1y, gy2 = gey2 + w1 * G0x - w0 * G1x;
            const double gw0 = -fx * gex0 - fy * gey0 + x2 * G1y - x1 * G2y - y2 * G1x + y1 * G2x;
            const double gw1 = -fx * gex1 - fy * gey1 - x2 * G0y + x0 * G2y + y2 * G0x - y0 * G2x;
            const double gw2 = -fx * gex2 - fy * gey2 + x1 * G0y - x0 * G1y - y1 * G0x + y0 * G1x;
            double* g0 = gpos + b * ps + 4 * i0;
            double* g1 = gpos + b * ps + 4 * i1;
            double* g2 = gpos + b * ps + 4 * i2;
            g0[0] += gx0; g0[1] += gy0; g0[3] += gw0;
            g1[0] += gx1; g1[1] += gy1; g1[3] += gw1;
            g2[0] += gx2; g2[1] += gy2; g2[3] += gw2;
        }
    }
    for (int64_t i = 0; i < npos; ++i) out[i] = (float)gpos[i];
}

/* out = u a0 + v a1 + (1 - u - v) a2 per channel, zero where empty. Returns the number of
   pixels whose triangle id (>= T) or vertex ids (>= V) are out of range (left zero). */
int64_t a3d_interp_fwd(const float* attr, int64_t as, int64_t C, const float* rast, const int64_t* tri,
                       int64_t T, int64_t V, int64_t N, int64_t HW, float* out)
{
    int64_t bad = 0;
    for (int64_t o = 0; o < N; ++o) {
        const float* r = rast + 4 * o; float* dst = out + C * o;
        const int64_t t = (int64_t)r[3] - 1;
        const int ok = t >= 0 && t < T && tri[3 * t] >= 0 && tri[3 * t] < V && tri[3 * t + 1] >= 0
                    && tri[3 * t + 1] < V && tri[3 * t + 2] >= 0 && tri[3 * t + 2] < V;
        if (!ok) { memset(dst, 0, C * sizeof(float)); bad += t >= 0; continue; }
        const float u = r[0], v = r[1], s = 1.0f - u - v;
        const float* a0 = attr + (o / HW) * as + C * tri[3 * t];
        const float* a1 = attr + (o / HW) * as + C * tri[3 * t + 1];
        const float* a2 = attr + (o / HW) * as + C * tri[3 * t + 2];
        for (int64_t c = 0; c < C; ++c) dst[c] = u * a0[c] + v * a1[c] + s * a2[c];
    }
    return bad;
}

/* Gradients of a3d_interp_fwd: gattr_out (float32, attr's layout, nattr values, accumulated in
   the float64 scratch gattr; both NULL when not wanted) and grast (float32 [N, 4], channels u
   and v written, others zero; may be NULL). */
void a3d_interp_bwd(const float* attr, int64_t as, int64_t C, const float* rast, const int64_t* tri,
                    int64_t N, int64_t HW, const float* gout, int64_t nattr, double* gattr,
                    float* gattr_out, float* grast)
{
    if (gattr) memset(gattr, 0, nattr * sizeof(double));
    for (int64_t o = 0; o < N; ++o) {
        const float* r = rast + 4 * o; const float* g = gout + C * o;
        const int64_t t = (int64_t)r[3] - 1;
        if (grast) memset(grast + 4 * o, 0, 4 * sizeof(float));
        if (t < 0) continue;
        const int64_t base = (o / HW) * as;
        const int64_t i0 = base + C * tri[3 * t], i1 = base + C * tri[3 * t + 1], i2 = base + C * tri[3 * t + 2];
        const double u = r[0], v = r[1], s = 1.0 - u - v;
        double gu = 0.0, gv = 0.0;
        for (int64_t c = 0; c < C; ++c) {
            const double gc = g[c];
            if (gattr) { gattr[i0 + c] += gc * u; gattr[i1 + c] += gc * v; gattr[i2 + c] += gc * s; }
            gu += gc * ((double)attr[i0 + c] - attr[i2 + c]);
            gv += gc * ((double)attr[i1 + c] - attr[i2 + c]);
        }
        if (grast) { grast[4 * o] = (float)gu; grast[4 * o + 1] = (float)gv; }
    }
    if (gattr) for (int64_t i = 0; i < nattr; ++i) gattr_out[i] = (float)gattr[i];
}
"""

_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
_SIGNATURES = {
    "a3d_bary_fwd": (None, [_P, _I64, _P, _P, _INT, _INT, _INT, _INT, _P, _P]),
    "a3d_bary_bwd": (None, [_P, _I64, _P, _P, _INT, _INT, _INT, _P, _P, _I64, _P, _P]),
    "a3d_interp_fwd": (_I64, [_P, _I64, _I64, _P, _P, _I64, _I64, _I64, _I64, _P]),
    "a3d_interp_bwd": (None, [_P, _I64, _I64, _P, _P, _I64, _I64, _P, _I64, _P, _P, _P]),
}
_LIB: ctypes.CDLL | None = None
_LIB_ERROR: str | None = None


def _load() -> ctypes.CDLL | None:
    """Build (once) and load the kernels; None (reason in ``_LIB_ERROR``) when impossible."""
    global _LIB, _LIB_ERROR
    if _LIB is None and _LIB_ERROR is None:
        _LIB, _LIB_ERROR = _cbuild.load("a3d_pixel", _C_SOURCE, _SIGNATURES)
    return _LIB


def usable(*tensors: torch.Tensor | None) -> bool:
    """True when the C kernels load, all ``tensors`` are on the CPU and
    ``A3D_RENDER_KERNELS`` is not ``"torch"`` (which forces the torch reference)."""
    if os.environ.get("A3D_RENDER_KERNELS", "c") == "torch":
        return False
    return all(t is None or t.device.type == "cpu" for t in tensors) and _load() is not None


def _ptr(t: torch.Tensor | None) -> int | None:
    """Data address of ``t`` for ctypes (None -> NULL)."""
    return None if t is None else t.data_ptr()


def _f32(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached as contiguous float32 (no copy when it already is)."""
    return t.detach().to(torch.float32).contiguous()


class _Barycentrics(torch.autograd.Function):
    """``(rast, rast_db)`` from ``pos`` and a triangle id map; gradients to ``pos`` only."""

    @staticmethod
    def forward(ctx, pos: torch.Tensor,  # type: ignore[override]
                tri: torch.Tensor, tid: torch.Tensor,
                grad_db: bool) -> tuple[torch.Tensor, torch.Tensor]:
        B, H, W = tid.shape
        p = _f32(pos)
        ps = p.shape[1] * 4 if p.dim() == 3 else 0
        rast = torch.empty(B, H, W, 4)
        rast_db = torch.empty(B, H, W, 4)
        _LIB.a3d_bary_fwd(p.data_ptr(), ps, tri.data_ptr(), tid.data_ptr(), B, H, W, int(grad_db),
                          rast.data_ptr(), rast_db.data_ptr())
        ctx.save_for_backward(p, tri, tid)
        ctx.grad_db, ctx.pos_dtype = grad_db, pos.dtype
        ctx.set_materialize_grads(False)  # unused outputs give None, not full-size zeros
        if not grad_db:
            ctx.mark_non_differentiable(rast_db)
        return rast, rast_db

    @staticmethod
    @once_differentiable  # the kernels build no graph: refuse double backward loudly
    def backward(ctx, g_rast: torch.Tensor | None,  # type: ignore[override]
                 g_db: torch.Tensor | None) -> tuple[torch.Tensor | None, None, None, None]:
        p, tri, tid = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        B, H, W = tid.shape
        gr = None if g_rast is None else _f32(g_rast)
        gd = None if (g_db is None or not ctx.grad_db) else _f32(g_db)
        if gr is None and gd is None:
            return None, None, None, None
        # Zeroing and casting happen in C: torch's threaded fill/copy of these small buffers
        # costs more than the kernel itself on a loaded machine.
        scratch = torch.empty(p.shape, dtype=torch.float64)
        gpos = torch.empty(p.shape, dtype=torch.float32)
        ps = p.shape[1] * 4 if p.dim() == 3 else 0
        _LIB.a3d_bary_bwd(p.data_ptr(), ps, tri.data_ptr(), tid.data_ptr(), B, H, W, _ptr(gr),
                          _ptr(gd), p.numel(), scratch.data_ptr(), gpos.data_ptr())
        return gpos.to(ctx.pos_dtype), None, None, None


def barycentrics(pos: torch.Tensor, tri: torch.Tensor, tri_id: torch.Tensor,
                 grad_db: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """C version of :func:`._bary.barycentrics` (same arguments, outputs and gradients).

    Args:
        pos: CPU clip-space vertices ``[B, V, 4]`` or ``[V, 4]`` (range mode).
        tri: ``[T, 3]`` int64; tri_id: ``[B, H, W]`` int64, -1 where empty.
    Returns:
        ``rast [B, H, W, 4]`` and ``rast_db [B, H, W, 4]`` float32.
    """
    if _load() is None:
        raise RuntimeError(f"C render kernels unavailable: {_LIB_ERROR}")
    t = tri.detach().to(torch.int64).contiguous()
    ids = tri_id.detach().to(torch.int64).contiguous()
    return _Barycentrics.apply(pos, t, ids, grad_db)


class _Interpolate(torch.autograd.Function):
    """``u a0 + v a1 + (1 - u - v) a2``; gradients to ``attr`` and to ``rast``'s ``u, v``."""

    @staticmethod
    def forward(ctx, attr: torch.Tensor, rast: torch.Tensor,  # type: ignore[override]
                tri: torch.Tensor) -> torch.Tensor:
        B, H, W, _ = rast.shape
        a, r = _f32(attr), _f32(rast)
        C = a.shape[-1]
        stride = a.shape[1] * C if (a.dim() == 3 and a.shape[0] > 1) else 0
        out = torch.empty(B, H, W, C)
        bad = _LIB.a3d_interp_fwd(a.data_ptr(), stride, C, r.data_ptr(), tri.data_ptr(),
                                  tri.shape[0], a.shape[-2], B * H * W, H * W, out.data_ptr())
        if bad:
            raise IndexError(f"interpolate: {bad} pixels name triangles or vertices out of range")
        ctx.save_for_backward(a, r, tri)
        ctx.stride, ctx.attr_dtype = stride, attr.dtype
        return out

    @staticmethod
    @once_differentiable  # the kernels build no graph: refuse double backward loudly
    def backward(ctx, g_out: torch.Tensor) -> tuple[torch.Tensor | None,  # type: ignore[override]
                                                   torch.Tensor | None, None]:
        a, r, tri = ctx.saved_tensors
        B, H, W, _ = r.shape
        C = a.shape[-1]
        want_a, want_r = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        scratch = torch.empty(a.shape, dtype=torch.float64) if want_a else None
        ga = torch.empty(a.shape, dtype=torch.float32) if want_a else None
        gr = torch.empty(B, H, W, 4) if want_r else None
        if want_a or want_r:
            _LIB.a3d_interp_bwd(a.data_ptr(), ctx.stride, C, r.data_ptr(), tri.data_ptr(),
                                B * H * W, H * W, _f32(g_out).data_ptr(), a.numel(),
                                _ptr(scratch), _ptr(ga), _ptr(gr))
        return (None if ga is None else ga.to(ctx.attr_dtype)), gr, None


def interpolate(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """C version of :func:`._bary.interpolate` without ``diff_attrs``: ``out [B, H, W, C]``.

    Args:
        attr: CPU ``[B, V, C]``, ``[1, V, C]`` or ``[V, C]`` per-vertex attributes.
        rast: ``[B, H, W, 4]`` float32 rasteriser output; tri: ``[T, 3]`` int.
    """
    if _load() is None:
        raise RuntimeError(f"C render kernels unavailable: {_LIB_ERROR}")
    t = tri.detach().to(torch.int64).contiguous()
    return _Interpolate.apply(attr, rast, t)
