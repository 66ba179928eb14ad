"""Differentiable barycentrics and attribute interpolation in torch (the CPU path's math).

Given which triangle covers each pixel (from any visibility backend), everything nvdiffrast's
rasteriser outputs is recomputed here in float32 torch from the clip-space vertices, so that
autograd carries gradients to ``pos``:

* forward values follow nvdiffrast's pixel shader: perspective-correct ``(u, v)`` from the 2D
  homogeneous edge functions, clamped to ``[0, 1]``; ``z/w`` clamped to ``[-1, 1]``;
  ``rast_db = (du/dX, du/dY, dv/dX, dv/dY)`` in pixel units;
* gradients follow nvdiffrast's gradient kernel, which differentiates the *unclamped*
  barycentrics with an epsilon ``copysign(1e-6, area)`` added to the homogeneous area, and
  passes no gradient through the depth channel. The two are combined with the exact
  "value + (g - g.detach())" trick: the forward value is unchanged bit for bit and the
  gradient is autograd's derivative of the epsilon formula (identical to the closed form
  in nvdiffrast's kernel).

Pixel ``(px, py)`` samples clip ``x = (2 px + 1) / W - 1``, ``y = (2 py + 1) / H - 1``.

This is the reference: on CPU tensors :mod:`._pixel_c` runs the same math in C (see
:mod:`.ops`); keep the two in step.
"""

from __future__ import annotations

import torch


def _st(value: torch.Tensor, grad_path: torch.Tensor) -> torch.Tensor:
    """Return ``value`` in the forward pass with ``grad_path``'s gradient in the backward pass."""
    return value.detach() + (grad_path - grad_path.detach())


def _gather_vertices(pos: torch.Tensor, tri: torch.Tensor, tid: torch.Tensor,
                     bidx: torch.Tensor, instance: bool) -> torch.Tensor:
    """Vertices of triangles ``tid [N]`` (batch ``bidx [N]``) as ``[N, 3, D]`` (keeps grad)."""
    vi = tri[tid]
    return pos[bidx[:, None], vi] if instance else pos[vi]


def barycentrics(pos: torch.Tensor, tri: torch.Tensor, tri_id: torch.Tensor,
                 grad_db: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """nvdiffrast-style ``(rast, rast_db)`` from a per-pixel triangle id map.

    Args:
        pos: clip-space vertices ``[B, V, 4]`` (instance mode) or ``[V, 4]`` (range mode), float32.
        tri: ``[T, 3]`` int64 vertex indices.
        tri_id: ``[B, H, W]`` int64 visible triangle (0-based into ``tri``), -1 where empty.
        grad_db: propagate gradients of ``rast_db`` into ``pos``.
    Returns:
        ``rast [B, H, W, 4]`` = (u, v, z/w, id + 1), zeros where empty, and
        ``rast_db [B, H, W, 4]`` = (du/dX, du/dY, dv/dX, dv/dY), zeros where empty.
    """
    B, H, W = tri_id.shape
    dev = pos.device
    flat = tri_id.reshape(-1)
    sel = (flat >= 0).nonzero().squeeze(1)
    tid = flat[sel]
    bidx = sel // (H * W)
    py = (sel // W) % H
    px = sel % W
    v = _gather_vertices(pos.float(), tri, tid, bidx, pos.dim() == 3)
    fx = ((2.0 * px + 1.0) / W - 1.0).float()
    fy = ((2.0 * py + 1.0) / H - 1.0).float()
    x, y, z, w = v.unbind(-1)  # each [N, 3]
    ex = x - fx[:, None] * w
    ey = y - fy[:, None] * w
    a0 = ex[:, 1] * ey[:, 2] - ey[:, 1] * ex[:, 2]
    a1 = ex[:, 2] * ey[:, 0] - ey[:, 2] * ex[:, 0]
    a2 = ex[:, 0] * ey[:, 1] - ey[:, 0] * ex[:, 1]
    at = a0 + a1 + a2

    # Forward values (nvdiffrast pixel shader).
    iw = 1.0 / at
    b0 = (a0 * iw).clamp(0.0, 1.0)
    b1 = (a1 * iw).clamp(0.0, 1.0)
    zw = ((z[:, 0] * a0 + z[:, 1] * a1 + z[:, 2] * a2) /
          (w[:, 0] * a0 + w[:, 1] * a1 + w[:, 2] * a2)).clamp(-1.0, 1.0)
    # Gradient path (nvdiffrast gradient kernel): unclamped, epsilon on the area.
    iwg = 1.0 / (at + torch.copysign(torch.full_like(at, 1e-6), at.detach()))
    b0g, b1g = a0 * iwg, a1 * iwg

    # d a_k / d fx and d a_k / d fy (edge functions are linear in fx, fy).
    da0dx = y[:, 2] * w[:, 1] - y[:, 1] * w[:, 2]
    da1dx = y[:, 0] * w[:, 2] - y[:, 2] * w[:, 0]
    da2dx = y[:, 1] * w[:, 0] - y[:, 0] * w[:, 1]
    da0dy = x[:, 1] * w[:, 2] - x[:, 2] * w[:, 1]
    da1dy = x[:, 2] * w[:, 0] - x[:, 0] * w[:, 2]
    da2dy = x[:, 0] * w[:, 1] - x[:, 1] * w[:, 0]
    datdx = da0dx + da1dx + da2dx
    datdy = da0dy + da1dy + da2dy
    xs, ys = 2.0 / W, 2.0 / H

    def _db(bu: torch.Tensor, bv: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
        return torch.stack([xs * inv * (bu * datdx - da0dx), ys * inv * (bu * datdy - da0dy),
                            xs * inv * (bv * datdx - da1dx), ys * inv * (bv * datdy - da1dy)], -1)

    db_val = _db(b0.detach(), b1.detach(), iw.detach())
    db = _st(db_val, _db(b0g, b1g, iwg)) if grad_db else db_val.detach()
    vals = torch.stack([_st(b0, b0g), _st(b1, b1g), zw.detach(), (tid + 1).float()], -1)
    rast = torch.zeros(B * H * W, 4, device=dev, dtype=torch.float32)
    rast_db = torch.zeros(B * H * W, 4, device=dev, dtype=torch.float32)
    rast = rast.index_put((sel,), vals).view(B, H, W, 4)
    rast_db = rast_db.index_put((sel,), db).view(B, H, W, 4)
    return rast, rast_db


def interpolate(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor,
                rast_db: torch.Tensor | None = None,
                diff_attrs: list[int] | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Interpolate vertex attributes with the barycentrics of ``rast`` (nvdiffrast semantics).

    Args:
        attr: ``[B, V, C]`` or ``[1, V, C]`` (instance mode) or ``[V, C]`` (shared), float32.
        rast: ``[B, H, W, 4]`` from :func:`barycentrics`.
        tri: ``[T, 3]`` int64.
        rast_db: ``[B, H, W, 4]``; needed when ``diff_attrs`` is given.
        diff_attrs: attribute channels whose pixel derivatives are wanted, or ``"all"``.
    Returns:
        ``out [B, H, W, C]`` = ``u a_0 + v a_1 + (1 - u - v) a_2`` (zeros where empty), and
        ``out_da [B, H, W, 2 K]`` with ``(dA_k/dX, dA_k/dY)`` pairs for the K requested
        channels, or an empty ``[0]`` tensor when none were requested.
    """
    B, H, W, _ = rast.shape
    C = attr.shape[-1]
    tid = rast[..., 3].reshape(-1).long() - 1
    sel = (tid >= 0).nonzero().squeeze(1)
    t = tid[sel]
    instance = attr.dim() == 3
    bidx = sel // (H * W) if (instance and attr.shape[0] > 1) else torch.zeros_like(sel)
    a = _gather_vertices(attr, tri, t, bidx, instance)  # [N, 3, C]
    uv = rast.reshape(-1, 4)[sel]
    u, v = uv[:, 0:1], uv[:, 1:2]
    vals = u * a[:, 0] + v * a[:, 1] + (1.0 - u - v) * a[:, 2]
    out = torch.zeros(B * H * W, C, device=attr.device, dtype=vals.dtype)
    out = out.index_put((sel,), vals).view(B, H, W, C)
    if diff_attrs is None:
        return out, torch.zeros(0, device=attr.device)
    if rast_db is None:
        raise ValueError("interpolate: diff_attrs requires rast_db")
    idx = list(range(C)) if diff_attrs == "all" else [int(i) for i in diff_attrs]
    db = rast_db.reshape(-1, 4)[sel]
    d0, d1 = (a[:, 0] - a[:, 2])[:, idx], (a[:, 1] - a[:, 2])[:, idx]
    dx = d0 * db[:, 0:1] + d1 * db[:, 2:3]
    dy = d0 * db[:, 1:2] + d1 * db[:, 3:4]
    da = torch.stack([dx, dy], -1).reshape(-1, 2 * len(idx))
    out_da = torch.zeros(B * H * W, 2 * len(idx), device=attr.device, dtype=da.dtype)
    return out, out_da.index_put((sel,), da).view(B, H, W, 2 * len(idx))
