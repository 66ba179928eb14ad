"""Visibility from a vectorised pure-torch z-buffer rasteriser (last-resort fallback, any device).

Same coverage rules as the C rasteriser (:mod:`a3d_mesh.render._raster_c`): double-precision
homogeneous edge functions at pixel centres, inclusive edges, near/far planes on ``z/w``.
Triangles are bucketed by the power-of-two size of their screen bounding box; each bucket tests
every (triangle, pixel-of-box) pair at once and resolves depth with one ``scatter_reduce(amin)``
on a 64-bit key ``(order-preserving signed float bits of z/w) << 32 | triangle index``, so the nearest
triangle wins and exact depth ties keep the lower index, as in the C path.
"""

from __future__ import annotations

import torch

_CHUNK = 1 << 22  # (triangle, pixel) pairs per batch of work: bounds peak memory (~0.5 GB).


def _ordered_key(zw: torch.Tensor) -> torch.Tensor:
    """Map float32 ``[N]`` to int64 ``[N]`` in ``[-2**31, 2**31)``, preserving order.

    Negative floats have their magnitude bits reversed so that the signed integer order is the
    float order; the range leaves room for ``key << 32`` in an int64.
    """
    bits = zw.to(torch.float32).view(torch.int32).to(torch.int64)
    return torch.where(bits >= 0, bits, -(1 << 31) - bits - 1)


def _key_to_float(key: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_ordered_key` for int64 ``[N]`` keys (the map is an involution)."""
    bits = torch.where(key >= 0, key, -(1 << 31) - key - 1)
    return bits.to(torch.int32).view(torch.float32)


def _boxes(v: torch.Tensor, H: int, W: int) -> tuple[torch.Tensor, ...]:
    """Inclusive pixel bounding boxes ``(xa, xb, ya, yb)`` of triangles ``v [T,3,4]`` (float64).

    Triangles straddling ``w = 0`` get the whole image; wholly-behind ones get an empty box.
    """
    w = v[..., 3]
    front = (w > 0).all(1)
    behind = (w <= 0).all(1)
    ws = torch.where(w > 0, w, torch.ones_like(w))
    sx = (v[..., 0] / ws + 1.0) * 0.5 * W - 0.5
    sy = (v[..., 1] / ws + 1.0) * 0.5 * H - 0.5
    xa = sx.min(1).values.floor().clamp(0, W - 1)
    xb = sx.max(1).values.ceil().clamp(-1, W - 1)
    ya = sy.min(1).values.floor().clamp(0, H - 1)
    yb = sy.max(1).values.ceil().clamp(-1, H - 1)
    off = (sx.max(1).values < 0) | (sx.min(1).values > W - 1) | (sy.max(1).values < 0) | (
        sy.min(1).values > H - 1)
    xa, xb = torch.where(front, xa, 0.0), torch.where(front, xb, W - 1.0)
    ya, yb = torch.where(front, ya, 0.0), torch.where(front, yb, H - 1.0)
    empty = behind | (front & off)
    xb = torch.where(empty, xa - 1, xb)
    return xa.long(), xb.long(), ya.long(), yb.long()


def _raster_one(v: torch.Tensor, tid: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Z-buffer keys ``[H*W]`` int64 for triangles ``v [T,3,4]`` float64 with ids ``tid [T]``."""
    init = torch.iinfo(torch.int64).max
    zbuf = torch.full((H * W,), init, dtype=torch.int64, device=v.device)
    xa, xb, ya, yb = _boxes(v, H, W)
    size = torch.maximum(xb - xa + 1, yb - ya + 1)
    keep = size > 0
    v, tid, xa, xb, ya, yb, size = (a[keep] for a in (v, tid, xa, xb, ya, yb, size))
    if v.shape[0] == 0:
        return zbuf
    cls = torch.ceil(torch.log2(size.double())).long()
    x0, y0, w0 = v[:, 0, 0], v[:, 0, 1], v[:, 0, 3]
    x1, y1, w1 = v[:, 1, 0], v[:, 1, 1], v[:, 1, 3]
    x2, y2, w2 = v[:, 2, 0], v[:, 2, 1], v[:, 2, 3]
    coef = torch.stack([  # a_k = A_k + B_k fx + C_k fy (homogeneous 2D edge functions)
        x1 * y2 - y1 * x2, y1 * w2 - w1 * y2, w1 * x2 - x1 * w2,
        x2 * y0 - y2 * x0, y2 * w0 - w2 * y0, w2 * x0 - x2 * w0,
        x0 * y1 - y0 * x1, y0 * w1 - w0 * y1, w0 * x1 - x0 * w1], 1).view(-1, 3, 3)
    for c in torch.unique(cls).tolist():
        s = 1 << c
        sel = (cls == c).nonzero().squeeze(1)
        oy, ox = torch.meshgrid(torch.arange(s, device=v.device), torch.arange(s, device=v.device),
                                indexing="ij")
        ox, oy = ox.reshape(1, -1), oy.reshape(1, -1)
        step = max(1, _CHUNK // (s * s))
        for i in range(0, sel.numel(), step):
            j = sel[i:i + step]
            px, py = xa[j, None] + ox, ya[j, None] + oy
            ok = (px <= xb[j, None]) & (py <= yb[j, None])
            fx = (2.0 * px + 1.0) / W - 1.0
            fy = (2.0 * py + 1.0) / H - 1.0
            cf = coef[j]
            a = cf[:, :, 0, None] + cf[:, :, 1, None] * fx[:, None] + cf[:, :, 2, None] * fy[:, None]
            at = a.sum(1)
            pos_in = (a >= 0).all(1) & (at > 0)
            neg_in = (a <= 0).all(1) & (at < 0)
            vv = v[j]
            wi = (vv[:, :, 3, None] * a).sum(1)
            zi = (vv[:, :, 2, None] * a).sum(1)
            ok &= (pos_in | neg_in) & (wi * at > 0)
            zw = zi / torch.where(ok, wi, torch.ones_like(wi))
            ok &= (zw >= -1.0) & (zw <= 1.0)
            key = (_ordered_key(zw[ok]) << 32) | tid[j, None].expand_as(px)[ok]
            zbuf.scatter_reduce_(0, (py * W + px)[ok], key, reduce="amin")
    return zbuf


def visibility(pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int],
               ranges: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest triangle and its depth per pixel (see :func:`a3d_mesh.render._raster_c.visibility`).

    Returns ``tri_id [B, H, W] int64`` (-1 empty) and ``depth [B, H, W] float32`` (+inf empty).
    """
    H, W = int(resolution[0]), int(resolution[1])
    p = pos.detach().double()
    t = tri.detach().long().to(pos.device)
    ids, depths = [], []
    B = p.shape[0] if ranges is None else ranges.shape[0]
    for b in range(B):
        if ranges is None:
            lo, hi, pb = 0, t.shape[0], p[b]
        else:
            lo, pb = int(ranges[b, 0]), p
            hi = min(lo + int(ranges[b, 1]), t.shape[0])
        tt = t[lo:hi]
        good = ((tt >= 0) & (tt < pb.shape[0])).all(1)
        tid = torch.arange(lo, hi, device=p.device)[good]
        zbuf = _raster_one(pb[tt[good]], tid, H, W)
        empty = zbuf == torch.iinfo(torch.int64).max
        ids.append(torch.where(empty, -1, zbuf & 0xFFFFFFFF).view(H, W))
        dep = _key_to_float(torch.where(empty, 0, zbuf >> 32))
        depths.append(torch.where(empty, torch.inf, dep).view(H, W))
    return torch.stack(ids), torch.stack(depths)
