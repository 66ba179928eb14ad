"""Analytic antialiasing with silhouette-edge gradients, vectorised in torch (nvdiffrast semantics).

Algorithm (after Laine et al. 2020, "Modular Primitives for High-Performance Differentiable
Rendering", sec. 3.4), restated:

1. Topology: for each triangle edge, the opposite vertex of the neighbouring triangle across it
   (-1 on boundary edges). An edge is a potential silhouette when the neighbour faces the other
   way in screen space or does not exist.
2. Every horizontally / vertically adjacent pixel pair with different triangle ids is a work
   item. The nearer of the two triangles (background counts as farthest) is the occluder; its
   pixel is the reference pixel.
3. Among the occluder's silhouette edges crossing the line between the two pixel centres (in
   the "steep enough" orientation), the one nearest the reference pixel is taken; ``dc`` in
   ``[0, 1]`` is where it crosses. The pixel on the far side blends ``alpha = ds (0.5 - dc)``
   of the other pixel's colour into its own (``ds = +1`` if the occluder is the first pixel's).
4. Gradients: colours by linearity; vertex positions through ``dc`` of the chosen edge,
   with nvdiffrast's ``1e-3`` pixel epsilon on the edge's extent and zero gradient when the
   blend saturates (``|alpha| >= 0.5``); ``pos_gradient_boost`` scales the position gradient.

The discrete choices (pairs, edges, signs) are made without autograd in float32 as nvdiffrast
makes them; only the chosen edge's crossing is rebuilt with autograd for the gradient.
This is the reference: on CPU tensors :mod:`._antialias_c` runs the same algorithm in C (see
:mod:`.ops`); keep the two in step.
"""

from __future__ import annotations

import torch

_FMAX = 3.402823466e38


def topology_hash(tri: torch.Tensor) -> torch.Tensor:
    """Opposite vertices across each edge: ``[T, 3]`` int64.

    Entry ``[t, k]`` is the vertex of another triangle sharing edge ``k`` of triangle ``t``
    (edge ``k`` joins vertices ``(k+1) % 3`` and ``(k+2) % 3``) that is not on that edge, or -1
    when the edge is a boundary (or the triangle is degenerate). On non-manifold edges the first
    two triangles (by index) define the pairing, as nvdiffrast's hash keeps two entries.
    """
    t = tri.long()
    T = t.shape[0]
    ea = torch.stack([t[:, 1], t[:, 2], t[:, 0]], 1).reshape(-1)
    eb = torch.stack([t[:, 2], t[:, 0], t[:, 1]], 1).reshape(-1)
    opp = t.reshape(-1)
    degen = ((t[:, 0] == t[:, 1]) | (t[:, 1] == t[:, 2]) | (t[:, 2] == t[:, 0]))
    degen = degen[:, None].expand(T, 3).reshape(-1)
    vmax = int(t.max().item()) + 2 if T else 1
    key = torch.minimum(ea, eb) * vmax + torch.maximum(ea, eb)
    key = torch.where(degen, -1 - torch.arange(3 * T, device=t.device), key)  # unique, unmatched
    order = torch.sort(key, stable=True).indices
    skey, sopp = key[order], opp[order]
    _, inverse, counts = torch.unique_consecutive(skey, return_inverse=True, return_counts=True)
    start = torch.cumsum(counts, 0) - counts
    first = sopp[start]
    second = torch.where(counts > 1, sopp[(start + 1).clamp(max=skey.numel() - 1)], -1)
    a, b = first[inverse], second[inverse]
    res_sorted = torch.where(sopp == a, b, torch.where(sopp == b, a, torch.full_like(a, -1)))
    res_sorted = torch.where(counts[inverse] > 1, res_sorted, torch.full_like(a, -1))
    res = torch.empty_like(res_sorted)
    res[order] = res_sorted
    return torch.where(degen, -1, res).view(T, 3)


def _same_sign(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Sign-bit equality (so +0 and -0 differ), as nvdiffrast tests it."""
    return torch.signbit(a) == torch.signbit(b)


def _rational_gt(n0: torch.Tensor, n1: torch.Tensor, d0: torch.Tensor,
                 d1: torch.Tensor) -> torch.Tensor:
    """``n0/d0 > n1/d1`` without division."""
    return (n0 * d1 > n1 * d0) == _same_sign(d0, d1)


def _work_items(tid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat index of the first pixel ``[N]`` and direction ``[N]`` (0 right, 1 down) of each pair."""
    B, H, W = tid.shape
    idx = torch.arange(B * H * W, device=tid.device).view(B, H, W)
    right = idx[:, :, :-1][tid[:, :, :-1] != tid[:, :, 1:]]
    down = idx[:, :-1, :][tid[:, :-1, :] != tid[:, 1:, :]]
    d = torch.cat([torch.zeros_like(right), torch.ones_like(down)])
    return torch.cat([right, down]), d


def _screen(p: torch.Tensor, xh: float, yh: float, fx: torch.Tensor,
            fy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-space ``x, y`` of clip vertices ``p [N, K, 4]`` relative to centres ``fx, fy [N]``."""
    iw = 1.0 / p[..., 3]
    return p[..., 0] * iw * xh - fx[:, None], p[..., 1] * iw * yh - fy[:, None]


def antialias(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor,
              topology: torch.Tensor | None = None,
              pos_gradient_boost: float = 1.0) -> torch.Tensor:
    """Antialias ``color [B, H, W, C]`` along silhouette edges (nvdiffrast ``antialias``).

    Args:
        color: ``[B, H, W, C]`` float32 image to antialias.
        rast: ``[B, H, W, 4]`` rasteriser output for the same geometry.
        pos: clip-space ``[B, V, 4]`` (instance mode) or ``[V, 4]`` (range mode).
        tri: ``[T, 3]`` int64.
        topology: :func:`topology_hash` of ``tri`` (computed when None).
        pos_gradient_boost: multiplier on the position gradients.
    Returns:
        ``[B, H, W, C]`` antialiased image, differentiable w.r.t. ``color`` and ``pos``.
    """
    B, H, W, C = color.shape
    tri = tri.long().to(color.device)
    topo = topology_hash(tri) if topology is None else topology.to(color.device)
    tid = rast[..., 3].detach().long() - 1
    depth = rast[..., 2].detach().reshape(-1)
    pix0, d = _work_items(tid)
    if pix0.numel() == 0:
        return color.clone()
    pix1 = pix0 + torch.where(d == 1, W, 1)
    flat_tid = tid.reshape(-1)
    instance = pos.dim() == 3
    xh, yh = 0.5 * W, 0.5 * H
    with torch.no_grad():
        t0, t1 = flat_tid[pix0], flat_tid[pix1]
        tri_sel = torch.where(t0 >= 0, t0, t1)
        both = (t0 >= 0) & (t1 >= 0)
        tri_sel = torch.where(both, torch.where(depth[pix0] < depth[pix1], t0, t1), tri_sel)
        from1 = tri_sel == t1
        ref = torch.where(from1, pix1, pix0)
        bidx = ref // (H * W)
        px = (ref % W).float()
        py = ((ref // W) % H).float()
        fx, fy = px + 0.5 - xh, py + 0.5 - yh
        vi = tri[tri_sel]
        op = topo[tri_sel]
        op = torch.where(op < 0, vi, op)  # no neighbour: the vertex itself, always a silhouette
        pd = pos.detach().float()
        P = pd[bidx[:, None], vi] if instance else pd[vi]
        O = pd[bidx[:, None], op] if instance else pd[op]
        x, y = _screen(P, xh, yh, fx, fy)
        ox, oy = _screen(O, xh, yh, fx, fy)
        x0, x1, x2 = x.unbind(1)
        y0, y1, y2 = y.unbind(1)
        ox0, ox1, ox2 = ox.unbind(1)
        oy0, oy1, oy2 = oy.unbind(1)
        bb = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        a = torch.stack([(x1 - ox0) * (y2 - oy0) - (x2 - ox0) * (y1 - oy0),
                         (x2 - ox1) * (y0 - oy1) - (x0 - ox1) * (y2 - oy1),
                         (x0 - ox2) * (y1 - oy2) - (x1 - ox2) * (y0 - oy2)], 1)
        sil = _same_sign(a, bb[:, None])  # [N, 3]: edge k can be a silhouette
        down = (d == 1)[:, None]
        X, Y = torch.where(down, y, x), torch.where(down, x, y)  # flip so the pair is along X
        Xn, Yn = X.roll(-1, 1), Y.roll(-1, 1)  # vertex k+1
        Xnn, Ynn = X.roll(-2, 1), Y.roll(-2, 1)  # vertex k+2
        dxk, dyk = Xnn - Xn, Ynn - Yn  # edge k runs from vertex k+1 to k+2
        ds = torch.where(from1, -1.0, 1.0)
        dk = ds[:, None] * (Xn * dyk - Yn * dxk)
        flat_edge = _same_sign(Yn, Ynn)  # edge does not cross the pixel row
        dk = torch.where(flat_edge, -_FMAX, dk)
        dyk = torch.where(flat_edge, 1.0, dyk)
        g10 = _rational_gt(dk[:, 1], dk[:, 0], dyk[:, 1], dyk[:, 0])
        g20 = _rational_gt(dk[:, 2], dk[:, 0], dyk[:, 2], dyk[:, 0])
        g21 = _rational_gt(dk[:, 2], dk[:, 1], dyk[:, 2], dyk[:, 1])
        di = torch.where(g20 & g21, 2, torch.where(g10, 1, 0))
        pick = lambda t: t.gather(1, di[:, None]).squeeze(1)  # noqa: E731
        ok = pick(sil) & (pick(dyk).abs() >= pick(dxk).abs())
        ok &= sil.any(1)
        dc = torch.where(ok, pick(dk) / pick(dyk), -_FMAX)
        ok &= (dc > -0.0625) & (dc < 1.0625)
        alpha = ds * (0.5 - dc.clamp(0.0, 1.0))
    keep = ok.nonzero().squeeze(1)
    pix0, pix1, alpha, di = pix0[keep], pix1[keep], alpha[keep], di[keep]
    # Gradient path: the chosen edge's crossing, rebuilt with autograd from pos.
    e1 = vi[keep].gather(1, ((di + 1) % 3)[:, None])
    e2 = vi[keep].gather(1, ((di + 2) % 3)[:, None])
    ev = torch.cat([e1, e2], 1)
    bk = bidx[keep]
    pe = pos[bk[:, None], ev] if instance else pos[ev]
    ex, ey = _screen(pe.float(), xh, yh, fx[keep], fy[keep])
    dn = down[keep]
    EX, EY = torch.where(dn, ey, ex), torch.where(dn, ex, ey)
    edx, edy = EX[:, 1] - EX[:, 0], EY[:, 1] - EY[:, 0]
    db = EX[:, 0] * edy - EY[:, 0] * edx
    eps = torch.copysign(torch.full_like(edy, 1e-3), edy.detach())
    g = -db / (edy + eps) * pos_gradient_boost
    g = g * (alpha.abs() < 0.5).float()
    alpha_t = alpha + (g - g.detach())
    cflat = color.reshape(-1, C)
    contrib = alpha_t[:, None] * (cflat[pix1] - cflat[pix0])
    target = torch.where(alpha > 0, pix0, pix1)
    return cflat.index_add(0, target, contrib).view(B, H, W, C)
