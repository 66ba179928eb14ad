"""C kernels for ``antialias`` forward and backward (CPU tensors only).

The algorithm, the discrete choices and the gradient conventions are exactly those of the torch
reference :mod:`._antialias` (nvdiffrast's): the forward pass repeats the reference's float32
operations in the same order (built without FMA contraction, see :mod:`._cbuild`) and visits the
work items in the same order (all horizontal pairs row-major, then all vertical pairs), so the
blended image matches it bit for bit. The backward pass is the closed-form derivative of the
reference's gradient path: colours by linearity; positions through the crossing
``dc = db / (edy + copysign(1e-3, edy))`` of the chosen edge (pixel units, zero where
``|alpha| >= 0.5``), in double precision, accumulated into float64 vertex gradients.

Layouts: ``color`` float32 ``[B, H, W, C]``; ``rast`` float32 ``[B, H, W, 4]``; ``pos`` float32
``[Bp, V, 4]`` with batch stride ``V * 4`` (instance mode) or 0 (range mode); ``tri`` and
``topo`` int64 ``[T, 3]``. A kept work item is stored as int64 ``(pix0, pix1, ref, e1, e2,
down)`` (flat pixel indices, reference pixel, edge vertex ids, 1 for a vertical pair) and a
float32 ``alpha``.
"""

from __future__ import annotations

import ctypes

import torch
from torch.autograd.function import once_differentiable

from . import _cbuild
from ._antialias import topology_hash

_C_SOURCE = r"""
#include <stdint.h>
#include <string.h>
#include <math.h>

#define FMAX 3.402823466e38f

static inline int same_sign(float a, float b) { return (signbit(a) != 0) == (signbit(b) != 0); }
static inline int rational_gt(float n0, float n1, float d0, float d1)
{ return (n0 * d1 > n1 * d0) == same_sign(d0, d1); }

/* Number of adjacent pixel pairs with different triangle ids (an upper bound on kept items),
   or -1 when a pixel names a triangle >= T or tri/topo name a vertex outside [0, V). */
int64_t a3d_aa_count(const float* rast, int B, int H, int W, const int64_t* tri,
                     const int64_t* topo, int64_t T, int64_t V)
{
    for (int64_t i = 0; i < 3 * T; ++i)
        if (tri[i] < 0 || tri[i] >= V || topo[i] >= V) return -1;
    int64_t n = 0;
    for (int b = 0; b < B; ++b) for (int y = 0; y < H; ++y) for (int x = 0; x < W; ++x) {
        const int64_t o = ((int64_t)b * H + y) * W + x;
        if ((int64_t)rast[4 * o + 3] - 1 >= T) return -1;
        if (x + 1 < W && rast[4 * o + 3] != rast[4 * (o + 1) + 3]) ++n;
        if (y + 1 < H && rast[4 * o + 3] != rast[4 * (o + W) + 3]) ++n;
    }
    return n;
}

/* Decide one pair (p0, p1); on success fill item[6] and *alpha and return 1. */
static int aa_item(const float* rast, const float* pos, int64_t ps, const int64_t* tri,
                   const int64_t* topo, int H, int W, int64_t p0, int64_t p1, int down,
                   int64_t* item, float* alpha)
{
    const int64_t t0 = (int64_t)rast[4 * p0 + 3] - 1, t1 = (int64_t)rast[4 * p1 + 3] - 1;
    int64_t ts = t0 >= 0 ? t0 : t1;
    if (t0 >= 0 && t1 >= 0) ts = rast[4 * p0 + 2] < rast[4 * p1 + 2] ? t0 : t1;
    const int from1 = ts == t1;
    const int64_t ref = from1 ? p1 : p0, HW = (int64_t)H * W, b = ref / HW;
    const float xh = (float)(0.5 * W), yh = (float)(0.5 * H);
    const float fx = ((float)(ref % W) + 0.5f) - xh, fy = ((float)((ref / W) % H) + 0.5f) - yh;
    float x[3], y[3], ox[3], oy[3];
    int64_t vi[3];
    for (int k = 0; k < 3; ++k) {
        vi[k] = tri[3 * ts + k];
        int64_t op = topo[3 * ts + k];
        if (op < 0) op = vi[k]; /* no neighbour: the vertex itself, always a silhouette */
        const float* p = pos + b * ps + 4 * vi[k];
        const float* q = pos + b * ps + 4 * op;
        const float iw = 1.0f / p[3], iq = 1.0f / q[3];
        x[k] = p[0] * iw * xh - fx; y[k] = p[1] * iw * yh - fy;
        ox[k] = q[0] * iq * xh - fx; oy[k] = q[1] * iq * yh - fy;
    }
    const float bb = (x[1] - x[0]) * (y[2] - y[0]) - (x[2] - x[0]) * (y[1] - y[0]);
    const float a[3] = {(x[1] - ox[0]) * (y[2] - oy[0]) - (x[2] - ox[0]) * (y[1] - oy[0]),
                        (x[2] - ox[1]) * (y[0] - oy[1]) - (x[0] - ox[1]) * (y[2] - oy[1]),
                        (x[0] - ox[2]) * (y[1] - oy[2]) - (x[1] - ox[2]) * (y[0] - oy[2])};
    int sil[3];
    float X[3], Y[3], dx[3], dy[3], dk[3];
    for (int k = 0; k < 3; ++k) {
        sil[k] = same_sign(a[k], bb);
        X[k] = down ? y[k] : x[k]; Y[k] = down ? x[k] : y[k]; /* flip so the pair is along X */
    }
    const float ds = from1 ? -1.0f : 1.0f;
    for (int k = 0; k < 3; ++k) { /* edge k runs from vertex k+1 to vertex k+2 */
        const int n = (k + 1) % 3, nn = (k + 2) % 3;
        dx[k] = X[nn] - X[n]; dy[k] = Y[nn] - Y[n];
        dk[k] = ds * (X[n] * dy[k] - Y[n] * dx[k]);
        if (same_sign(Y[n], Y[nn])) { dk[k] = -FMAX; dy[k] = 1.0f; } /* misses the pixel row */
    }
    const int g10 = rational_gt(dk[1], dk[0], dy[1], dy[0]);
    const int g20 = rational_gt(dk[2], dk[0], dy[2], dy[0]);
    const int g21 = rational_gt(dk[2], dk[1], dy[2], dy[1]);
    const int di = (g20 && g21) ? 2 : (g10 ? 1 : 0);
    int ok = sil[di] && fabsf(dy[di]) >= fabsf(dx[di]) && (sil[0] || sil[1] || sil[2]);
    const float dc = ok ? dk[di] / dy[di] : -FMAX;
    ok = ok && dc > -0.0625f && dc < 1.0625f;
    if (!ok) return 0;
    const float dcc = dc < 0.0f ? 0.0f : (dc > 1.0f ? 1.0f : dc);
    *alpha = ds * (0.5f - dcc);
    item[0] = p0; item[1] = p1; item[2] = ref;
    item[3] = vi[(di + 1) % 3]; item[4] = vi[(di + 2) % 3]; item[5] = down;
    return 1;
}

/* out = color + blends; returns the number of kept items written to items/alpha. */
int64_t a3d_aa_fwd(const float* color, int64_t C, const float* rast, const float* pos, int64_t ps,
                   const int64_t* tri, const int64_t* topo, int B, int H, int W,
                   float* out, int64_t* items, float* alpha)
{
    const int64_t N = (int64_t)B * H * W;
    memcpy(out, color, N * C * sizeof(float));
    int64_t n = 0;
    for (int pass = 0; pass < 2; ++pass) /* horizontal pairs first, then vertical: the reference order */
        for (int b = 0; b < B; ++b) for (int y = 0; y < H - pass; ++y) for (int x = 0; x < W - 1 + pass; ++x) {
            const int64_t p0 = ((int64_t)b * H + y) * W + x, p1 = p0 + (pass ? W : 1);
            if (rast[4 * p0 + 3] == rast[4 * p1 + 3]) continue;
            if (!aa_item(rast, pos, ps, tri, topo, H, W, p0, p1, pass, items + 6 * n, alpha + n)) continue;
            const float al = alpha[n] + 0.0f;
            float* dst = out + C * (al > 0.0f ? p0 : p1);
            for (int64_t c = 0; c < C; ++c) dst[c] += al * (color[C * p1 + c] - color[C * p0 + c]);
            ++n;
        }
    return n;
}

/* Element offset of (pixel o, channel 0) in a tensor with element strides st[4] (b, y, x, c). */
static inline int64_t strided(int64_t o, int H, int W, const int64_t* st)
{ return (o / ((int64_t)H * W)) * st[0] + ((o / W) % H) * st[1] + (o % W) * st[2]; }

/* From gout (float32 [B, H, W, C] with element strides gst, e.g. an expanded tensor):
   gcolor (float32, color's layout) and gpos_out (float32, pos's layout, npos values,
   accumulated in the float64 scratch gpos; both NULL when no position gradient is wanted). */
void a3d_aa_bwd(const float* color, int64_t C, const float* pos, int64_t ps, int64_t npos,
                int B, int H, int W, const int64_t* items, const float* alpha, int64_t n,
                float boost, const float* gout, const int64_t* gst, float* gcolor, double* gpos,
                float* gpos_out)
{
    for (int64_t o = 0; o < (int64_t)B * H * W; ++o) { /* identity path */
        const float* g = gout + strided(o, H, W, gst);
        for (int64_t c = 0; c < C; ++c) gcolor[C * o + c] = g[c * gst[3]];
    }
    if (gpos) memset(gpos, 0, npos * sizeof(double));
    const float xhf = (float)(0.5 * W), yhf = (float)(0.5 * H);
    const double xh = xhf, yh = yhf;
    const int64_t HW = (int64_t)H * W;
    for (int64_t i = 0; i < n; ++i) {
        const int64_t* it = items + 6 * i;
        const int64_t p0 = it[0], p1 = it[1], ref = it[2];
        const float al = alpha[i];
        const float* gt = gout + strided(al > 0.0f ? p0 : p1, H, W, gst);
        double ga = 0.0;
        for (int64_t c = 0; c < C; ++c) {
            const float g = gt[c * gst[3]];
            gcolor[C * p1 + c] += al * g;
            gcolor[C * p0 + c] -= al * g;
            ga += (double)g * ((double)color[C * p1 + c] - color[C * p0 + c]);
        }
        if (!gpos || !(fabsf(al) < 0.5f)) continue; /* saturated blend: no position gradient */
        const int64_t b = ref / HW;
        const float fxf = ((float)(ref % W) + 0.5f) - xhf, fyf = ((float)((ref / W) % H) + 0.5f) - yhf;
        const double fx = fxf, fy = fyf;
        const float* q[2] = {pos + b * ps + 4 * it[3], pos + b * ps + 4 * it[4]};
        double ex[2], ey[2], iw[2];
        float exf[2], eyf[2];
        for (int j = 0; j < 2; ++j) {
            iw[j] = 1.0 / (double)q[j][3];
            ex[j] = q[j][0] * iw[j] * xh - fx; ey[j] = q[j][1] * iw[j] * yh - fy;
            const float iwf = 1.0f / q[j][3];
            exf[j] = q[j][0] * iwf * xhf - fxf; eyf[j] = q[j][1] * iwf * yhf - fyf;
        }
        const int down = (int)it[5];
        const double X0 = down ? ey[0] : ex[0], Y0 = down ? ex[0] : ey[0];
        const double X1 = down ? ey[1] : ex[1], Y1 = down ? ex[1] : ey[1];
        const double edy = Y1 - Y0, db = X0 * edy - Y0 * (X1 - X0);
        /* the epsilon takes the sign of the float32 extent, as in the reference */
        const float edyf = down ? exf[1] - exf[0] : eyf[1] - eyf[0];
        const double inv = 1.0 / (edy + copysign(1e-3, (double)edyf));
        const double k = ga * boost;
        /* g = -db * inv * boost with db = X0 Y1 - Y0 X1 */
        const double gX0 = -k * inv * Y1, gX1 = k * inv * Y0;
        const double gY0 = k * inv * X1 - k * db * inv * inv, gY1 = -k * inv * X0 + k * db * inv * inv;
        const double gex[2] = {down ? gY0 : gX0, down ? gY1 : gX1};
        const double gey[2] = {down ? gX0 : gY0, down ? gX1 : gY1};
        for (int j = 0; j < 2; ++j) {
            double* g = gpos + b * ps + 4 * it[3 + j];
            g[0] += gex[j] * xh * iw[j];
            g[1] += gey[j] * yh * iw[j];
            g[3] -= (gex[j] * q[j][0] * xh + gey[j] * q[j][1] * yh) * iw[j] * iw[j];
        }
    }
    if (gpos) for (int64_t i = 0; i < npos; ++i) gpos_out[i] = (float)gpos[i];
}
"""

_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
_SIGNATURES = {
    "a3d_aa_count": (_I64, [_P, _INT, _INT, _INT, _P, _P, _I64, _I64]),
    "a3d_aa_fwd": (_I64, [_P, _I64, _P, _P, _I64, _P, _P, _INT, _INT, _INT, _P, _P, _P]),
    "a3d_aa_bwd": (None, [_P, _I64, _P, _I64, _I64, _INT, _INT, _INT, _P, _P, _I64, ctypes.c_float,
                          _P, _P, _P, _P, _P]),
}
_LIB: ctypes.CDLL | None = None
_LIB_ERROR: str | None = None


def _load() -> ctypes.CDLL | None:
    """Build (once) and load the kernels; None (reason in ``_LIB_ERROR``) when impossible."""
    global _LIB, _LIB_ERROR
    if _LIB is None and _LIB_ERROR is None:
        _LIB, _LIB_ERROR = _cbuild.load("a3d_antialias", _C_SOURCE, _SIGNATURES)
    return _LIB


def available() -> bool:
    """True when the antialias kernels are built (or can be built) and load."""
    return _load() is not None


def _ptr(t: torch.Tensor | None) -> int | None:
    """Data address of ``t`` for ctypes (None -> NULL)."""
    return None if t is None else t.data_ptr()


def _f32(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached as contiguous float32 (no copy when it already is)."""
    return t.detach().to(torch.float32).contiguous()


class _Antialias(torch.autograd.Function):
    """Silhouette blending; gradients to ``color`` and ``pos`` (not to ``rast``)."""

    @staticmethod
    def forward(ctx, color: torch.Tensor,  # type: ignore[override]
                pos: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor, topo: torch.Tensor,
                boost: float) -> torch.Tensor:
        B, H, W, C = color.shape
        c, p, r = _f32(color), _f32(pos), _f32(rast)
        ps = p.shape[1] * 4 if p.dim() == 3 else 0
        cap = int(_LIB.a3d_aa_count(r.data_ptr(), B, H, W, tri.data_ptr(), topo.data_ptr(),
                                    tri.shape[0], p.shape[-2]))
        if cap < 0:
            raise IndexError("antialias: rast, tri and pos do not match (index out of range)")
        items = torch.empty(cap, 6, dtype=torch.int64)
        alpha = torch.empty(cap)
        out = torch.empty(B, H, W, C)
        n = _LIB.a3d_aa_fwd(c.data_ptr(), C, r.data_ptr(), p.data_ptr(), ps, tri.data_ptr(),
                            topo.data_ptr(), B, H, W, out.data_ptr(), items.data_ptr(),
                            alpha.data_ptr())
        ctx.save_for_backward(c, p, items[:n], alpha[:n])
        ctx.boost, ctx.pos_dtype, ctx.color_dtype = float(boost), pos.dtype, color.dtype
        return out.to(color.dtype)

    @staticmethod
    @once_differentiable  # the kernels build no graph: refuse double backward loudly
    def backward(ctx, g_out: torch.Tensor) -> tuple[torch.Tensor | None,  # type: ignore[override]
                                                   torch.Tensor | None, None, None, None, None]:
        c, p, items, alpha = ctx.saved_tensors
        B, H, W, C = c.shape
        ps = p.shape[1] * 4 if p.dim() == 3 else 0
        # The kernel reads g_out through its strides (sum().backward() gives an expanded tensor)
        # and zeroes/casts its own buffers: torch's threaded copies of these buffers cost more
        # than the kernel itself on a loaded machine.
        g = g_out.detach() if g_out.dtype == torch.float32 else g_out.detach().float()
        gst = torch.tensor(g.stride(), dtype=torch.int64)
        gcol = torch.empty(B, H, W, C)
        want_p = ctx.needs_input_grad[1]
        scratch = torch.empty(p.shape, dtype=torch.float64) if want_p else None
        gpos = torch.empty(p.shape, dtype=torch.float32) if want_p else None
        _LIB.a3d_aa_bwd(c.data_ptr(), C, p.data_ptr(), ps, p.numel(), B, H, W, items.data_ptr(),
                        alpha.data_ptr(), items.shape[0], ctx.boost, g.data_ptr(), gst.data_ptr(),
                        gcol.data_ptr(), _ptr(scratch), _ptr(gpos))
        gc = gcol.to(ctx.color_dtype) if ctx.needs_input_grad[0] else None
        gp = gpos.to(ctx.pos_dtype) if gpos is not None else None
        return gc, gp, None, None, None, None


def antialias(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor,
              topology: torch.Tensor | None = None,
              pos_gradient_boost: float = 1.0) -> torch.Tensor:
    """C version of :func:`._antialias.antialias` (same arguments, output and gradients).

    Args:
        color: CPU ``[B, H, W, C]`` image; rast: ``[B, H, W, 4]`` rasteriser output.
        pos: clip-space ``[B, V, 4]`` (instance mode) or ``[V, 4]`` (range mode).
        tri: ``[T, 3]`` int; topology: :func:`._antialias.topology_hash` of ``tri`` or None.
        pos_gradient_boost: multiplier on the position gradients.
    Returns:
        ``[B, H, W, C]`` antialiased image, differentiable w.r.t. ``color`` and ``pos``.
    """
    if _load() is None:
        raise RuntimeError(f"C render kernels unavailable: {_LIB_ERROR}")
    t = tri.detach().to(torch.int64).contiguous()
    topo = topology_hash(t) if topology is None else topology.detach().to(torch.int64).contiguous()
    return _Antialias.apply(color, pos, rast, t, topo, pos_gradient_boost)
