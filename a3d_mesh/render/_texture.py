"""Texture sampling (nearest, bilinear, mipmapped) in torch with nvdiffrast's conventions.

* ``uv`` in ``[0, 1]`` spans the texture; texel ``(i, j)`` (column i, row j) has its centre at
  ``((i + 0.5) / Wt, (j + 0.5) / Ht)``; row 0 of ``tex`` is ``v = 0`` (no flip).
* Boundaries: ``wrap`` (repeat), ``clamp`` (to edge texel centres), ``zero`` (texels outside
  read as 0).
* Mip pyramid: each level halves both sizes (a size of 1 stays 1) by box filtering; the chain
  stops at 1x1, at ``max_mip_level``, or when a size above 1 is odd.
* Level of detail from ``uv_da = (du/dX, du/dY, dv/dX, dv/dY)``: ``0.5 log2`` of the squared
  major axis of the pixel footprint in texels, plus ``mip_level_bias``, clamped to the pyramid.
  ``linear-mipmap-nearest`` uses ``floor(level)``; ``linear-mipmap-linear`` blends the two
  adjacent levels by the fractional part.

All lookups are gathers on a flat concatenation of the levels, so autograd gives gradients to
``tex`` (including through the pyramid), ``uv`` (bilinear weights) and ``uv_da`` /
``mip_level_bias`` (level blend).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def build_mip(tex: torch.Tensor, max_mip_level: int | None = None) -> list[torch.Tensor]:
    """Mip pyramid of ``tex [Bt, Ht, Wt, C]``: list of levels, level 0 first (differentiable)."""
    levels = [tex]
    while max_mip_level is None or len(levels) <= max_mip_level:
        t = levels[-1]
        h, w = t.shape[1], t.shape[2]
        if (h == 1 and w == 1) or (h > 1 and h % 2) or (w > 1 and w % 2):
            break
        x = t.permute(0, 3, 1, 2)
        x = F.avg_pool2d(x, kernel_size=(2 if h > 1 else 1, 2 if w > 1 else 1))
        levels.append(x.permute(0, 2, 3, 1))
    return levels


def _level_lookup(levels: list[torch.Tensor], lvl: torch.Tensor, uv: torch.Tensor,
                  tz: torch.Tensor, boundary: str) -> torch.Tensor:
    """Bilinear lookups ``[N, C]`` at per-sample levels ``lvl [N]`` (int64), ``uv [N, 2]``.

    ``tz [N]`` is the texture batch index of each sample.
    """
    dev = uv.device
    sizes = torch.tensor([[t.shape[1], t.shape[2]] for t in levels], device=dev)
    Bt = levels[0].shape[0]
    counts = sizes[:, 0] * sizes[:, 1] * Bt
    base = torch.cumsum(counts, 0) - counts
    flat = torch.cat([t.reshape(-1, t.shape[-1]) for t in levels], 0)
    h, w = sizes[lvl, 0], sizes[lvl, 1]
    hf, wf = h.to(uv.dtype), w.to(uv.dtype)
    u, v = uv[:, 0], uv[:, 1]
    if boundary == "wrap":
        u = u - torch.floor(u.detach())
        v = v - torch.floor(v.detach())
    u = u * wf - 0.5
    v = v * hf - 0.5
    clamp_u = clamp_v = torch.zeros_like(lvl, dtype=torch.bool)
    if boundary == "clamp":
        u = torch.minimum(torch.clamp(u, min=0.0), wf - 1.0)
        v = torch.minimum(torch.clamp(v, min=0.0), hf - 1.0)
        clamp_u = (u == 0) | (u == wf - 1.0)
        clamp_v = (v == 0) | (v == hf - 1.0)
    iu0 = torch.floor(u.detach()).long()
    iv0 = torch.floor(v.detach()).long()
    iu1 = iu0 + (~clamp_u).long()
    iv1 = iv0 + (~clamp_v).long()
    fu = (u - iu0).unsqueeze(1)
    fv = (v - iv0).unsqueeze(1)
    if boundary == "wrap":
        iu0, iv0 = torch.where(iu0 < 0, iu0 + w, iu0), torch.where(iv0 < 0, iv0 + h, iv0)
        iu1, iv1 = torch.where(iu1 >= w, iu1 - w, iu1), torch.where(iv1 >= h, iv1 - h, iv1)

    def fetch(iu: torch.Tensor, iv: torch.Tensor) -> torch.Tensor:
        inside = (iu >= 0) & (iu < w) & (iv >= 0) & (iv < h)
        idx = base[lvl] + (tz * h + iv.clamp(0).minimum(h - 1)) * w + iu.clamp(0).minimum(w - 1)
        val = flat[idx]
        return val * inside.unsqueeze(1).to(val.dtype) if boundary == "zero" else val

    a00, a10, a01, a11 = fetch(iu0, iv0), fetch(iu1, iv0), fetch(iu0, iv1), fetch(iu1, iv1)
    top = a00 + fu * (a10 - a00)
    bot = a01 + fu * (a11 - a01)
    return top + fv * (bot - top)


def _nearest(tex: torch.Tensor, uv: torch.Tensor, tz: torch.Tensor, boundary: str) -> torch.Tensor:
    """Nearest-texel lookups ``[N, C]`` from level 0 for ``uv [N, 2]``."""
    _, h, w, C = tex.shape
    u, v = uv[:, 0], uv[:, 1]
    if boundary == "wrap":
        u, v = u - torch.floor(u), v - torch.floor(v)
    iu, iv = torch.floor(u * w).long(), torch.floor(v * h).long()
    inside = (iu >= 0) & (iu < w) & (iv >= 0) & (iv < h)
    val = tex.reshape(-1, C)[(tz * h + iv.clamp(0, h - 1)) * w + iu.clamp(0, w - 1)]
    return val * inside.unsqueeze(1).to(val.dtype) if boundary == "zero" else val


def _mip_level(uv_da: torch.Tensor | None, bias: torch.Tensor | None, n: int, Wt: int, Ht: int,
               max_level: int, dev: torch.device) -> torch.Tensor:
    """Continuous mip level ``[n]`` from footprints ``uv_da [n, 4]`` and ``bias [n]``, clamped."""
    flevel = torch.zeros(n, device=dev)
    if uv_da is not None:
        dsdx, dsdy = uv_da[:, 0] * Wt, uv_da[:, 1] * Wt
        dtdx, dtdy = uv_da[:, 2] * Ht, uv_da[:, 3] * Ht
        A = dsdx * dsdx + dtdx * dtdx
        B = dsdy * dsdy + dtdy * dtdy
        Cc = dsdx * dsdy + dtdx * dtdy
        l2b = 0.5 * (A + B)
        # Clamped so the isotropic case (A == B, C == 0) keeps a finite gradient.
        l2a = torch.sqrt((0.25 * (A - B) ** 2 + Cc * Cc).clamp_min(1e-30))
        flevel = 0.5 * torch.log2(l2b + l2a)
    if bias is not None:
        flevel = flevel + bias
    flevel = torch.nan_to_num(flevel, nan=0.0, posinf=float(max_level), neginf=0.0)
    return flevel.clamp(0.0, float(max_level))


def texture(tex: torch.Tensor, uv: torch.Tensor, uv_da: torch.Tensor | None = None,
            mip_level_bias: torch.Tensor | None = None, mip: list[torch.Tensor] | None = None,
            filter_mode: str = "auto", boundary_mode: str = "wrap",
            max_mip_level: int | None = None) -> torch.Tensor:
    """Sample ``tex [Bt, Ht, Wt, C]`` (``Bt`` = 1 or B) at ``uv [B, H, W, 2]`` -> ``[B, H, W, C]``.

    ``mip`` may pass a prebuilt pyramid (:func:`build_mip`, level 0 first) to reuse it.
    """
    if boundary_mode not in ("wrap", "clamp", "zero"):
        raise ValueError(f"texture: unsupported boundary_mode {boundary_mode!r}")
    if filter_mode == "auto":
        mipped = uv_da is not None or mip_level_bias is not None
        filter_mode = "linear-mipmap-linear" if mipped else "linear"
    B, H, W, _ = uv.shape
    Bt, Ht, Wt, C = tex.shape
    n = B * H * W
    uvf = uv.reshape(n, 2)
    tz = (torch.arange(n, device=uv.device) // (H * W)) if Bt > 1 else torch.zeros(
        n, dtype=torch.long, device=uv.device)
    if filter_mode == "nearest":
        return _nearest(tex, uvf, tz, boundary_mode).view(B, H, W, C)
    if filter_mode == "linear":
        lvl = torch.zeros(n, dtype=torch.long, device=uv.device)
        return _level_lookup([tex], lvl, uvf, tz, boundary_mode).view(B, H, W, C)
    if filter_mode not in ("linear-mipmap-nearest", "linear-mipmap-linear"):
        raise ValueError(f"texture: unsupported filter_mode {filter_mode!r}")
    levels = list(mip) if mip is not None else build_mip(tex, max_mip_level)
    if max_mip_level is not None:
        levels = levels[:max_mip_level + 1]
    top = len(levels) - 1
    da = None if uv_da is None else uv_da.reshape(n, 4)
    bias = None if mip_level_bias is None else mip_level_bias.reshape(n)
    flevel = _mip_level(da, bias, n, Wt, Ht, top, uv.device)
    l0 = torch.floor(flevel.detach()).long()
    out0 = _level_lookup(levels, l0, uvf, tz, boundary_mode)
    if filter_mode == "linear-mipmap-nearest":
        return out0.view(B, H, W, C)
    l1 = (l0 + 1).clamp(max=top)
    frac = (flevel - l0).unsqueeze(1)
    out1 = _level_lookup(levels, l1, uvf, tz, boundary_mode)
    return (out0 + frac * (out1 - out0)).view(B, H, W, C)
