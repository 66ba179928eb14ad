"""Pure-torch multiresolution hash-grid encoding with tiny-cuda-nn's exact semantics.

Works on any device (the CPU reference path; also runs on CUDA without tinycudann). Memory stays
linear in N with a small constant: levels are processed one after the other, each needing a few
``[8, N]`` int64/float32 buffers; nothing of shape ``[N, 8, L]`` or in float64 is materialised.
Work is laid out corner-major (``[8, N]``, N innermost) because element-wise kernels over a
trailing axis of length 2 or 8 run several times slower on CPU than over a long contiguous axis.
The backward pass recomputes corner indices and weights level by level (instead of keeping
``[8, N, L]`` buffers alive between forward and backward) and scatters table gradients with one
``index_add_`` per level into a single flat gradient buffer.

Per level, for a point ``x in [0,1]^3`` (tcnn ``pos_fract`` with linear interpolation):
``p = fma(s_l, x, 0.5)`` in float32, ``g = floor(p)`` (cell corner), ``t = p - g`` (weights);
corner ``c = (c_x, c_y, c_z) in {0,1}^3`` has weight ``w_c = ((w_x * w_y) * w_z)`` with
``w_d = c_d ? t_d : 1 - t_d`` and table index
``dense: (g_x + c_x) + (g_y + c_y) r + (g_z + c_z) r^2  (mod 2^32) mod T_l``,
``hashed: ((g_x + c_x) * 1 ^ (g_y + c_y) * 2654435761 ^ (g_z + c_z) * 805459861) (mod 2^32) mod T_l``.
Feature ``f`` of level ``l`` is ``sum_c w_c * table[O_l + index_c, f]``, output column ``l * F + f``.
Corners are enumerated ``c = c_x + 2 c_y + 4 c_z`` (tcnn's order), i.e. axes (z, y, x).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .hashgrid_layout import LevelLayout

# Coherent prime hash factors of tcnn for dims x, y, z (x uses 1 to keep neighbours coherent).
HASH_PRIMES = (1, 2654435761, 805459861)
_MASK32 = 0xFFFFFFFF


def cell_coordinates(xt: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer cell corner and fractional position of points at one level.

    Args:
        xt: [3, N] float32 (or float64) points, coordinate-major, nominally in [0, 1].
        scale: float32 level scale ``s_l``.

    Returns:
        corner: [3, N] int64, ``floor(s_l * x + 0.5)`` (negative for inputs below about
            ``-0.5 / s_l``; index functions then reduce modulo 2^32 like tcnn's uint32 cast).
        frac: [3, N] same dtype as ``xt``, ``s_l * x + 0.5 - corner`` in [0, 1).
    """
    if xt.dtype == torch.float32:
        # s*x + 0.5 evaluated in float64 (a float32 product is exact there) and rounded once to
        # float32 reproduces tcnn's fmaf except for vanishingly rare double roundings.
        pos = (xt.double() * scale + 0.5).float()
    else:
        pos = xt * scale + 0.5
    floor = torch.floor(pos)
    return floor.long(), pos - floor


def corner_indices(corner: torch.Tensor, layout: LevelLayout) -> torch.Tensor:
    """Table indices (within the level) of the 8 cell corners.

    Args:
        corner: [3, N] int64 cell corners from :func:`cell_coordinates`.
        layout: the level's layout.

    Returns:
        [2, 2, 2, N] int64 indices in ``[0, T_l)``, axes (z, y, x, point).
    """
    size = layout.size
    pow2 = size & (size - 1) == 0
    upper = corner + 1
    if layout.dense:
        res = layout.resolution
        ix = torch.stack((corner[0], upper[0]))
        iy = torch.stack((corner[1], upper[1])) * res
        iz = torch.stack((corner[2], upper[2])) * (res * res)
        idx = (iz[:, None, :] + iy[None, :, :])[:, :, None, :] + ix[None, None, :, :]
        if bool(corner.min() >= 0) and bool(corner.max() < res):
            # In-range corners give idx < r^3 + r^2 + r < 2 T_l: one conditional subtraction is
            # the exact modulo and is much cheaper than an int64 division.
            return torch.where(idx >= size, idx - size, idx)
        return torch.remainder(idx & _MASK32, size)
    # int64 products wrap modulo 2^64, so their low 32 bits are tcnn's uint32 products; masking
    # each factor by T_l - 1 before the XOR is the same as masking the XOR (power-of-two T_l).
    mask = size - 1 if pow2 else _MASK32
    hx = torch.stack((corner[0], upper[0])) * HASH_PRIMES[0] & mask
    hy = torch.stack((corner[1], upper[1])) * HASH_PRIMES[1] & mask
    hz = torch.stack((corner[2], upper[2])) * HASH_PRIMES[2] & mask
    idx = (hz[:, None, :] ^ hy[None, :, :])[:, :, None, :] ^ hx[None, None, :, :]
    return idx if pow2 else torch.remainder(idx, size)


def axis_weights(frac: torch.Tensor) -> torch.Tensor:
    """Per-axis linear weights ``(1 - t_d, t_d)``: [3, N] -> [3, 2, N] (axis, corner bit, point)."""
    return torch.stack((1.0 - frac, frac), dim=1)


def corner_weights(wa: torch.Tensor) -> torch.Tensor:
    """Trilinear corner weights ``(w_x * w_y) * w_z`` (tcnn's product order).

    Args:
        wa: [3, 2, N] per-axis weights from :func:`axis_weights`.

    Returns:
        [2, 2, 2, N] weights, axes (z, y, x, point); they sum to 1 over the 8 corners.
    """
    wxy = wa[1][:, None, :] * wa[0][None, :, :]  # [2y, 2x, N]
    return wxy[None, :, :, :] * wa[2][:, None, None, :]


def _level_table(params: torch.Tensor, layout: LevelLayout, n_features: int) -> torch.Tensor:
    """[T_l, F] view of one level's slice of the flat parameter vector."""
    start = layout.offset * n_features
    return params[start : start + layout.size * n_features].view(layout.size, n_features)


def _gather(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``table[idx]``: [T, F] table, [2, 2, 2, N] indices -> [8, N, F]."""
    return table.index_select(0, idx.reshape(-1)).view(8, idx.shape[-1], table.shape[1])


def _scatter_add(table_grad: torch.Tensor, idx: torch.Tensor, contrib: torch.Tensor) -> None:
    """``table_grad[idx[k]] += contrib[k]`` for [T, F] grads, [8N] indices, [8N, F] values."""
    n_features = table_grad.shape[1]
    if n_features == 2 and table_grad.dtype == torch.float32 and not torch.is_grad_enabled():
        # One complex64 scatter moves both features at once: ~2x faster than a row scatter on CPU.
        table_grad.view(torch.complex64).view(-1).index_add_(0, idx, contrib.view(torch.complex64).view(-1))
    elif n_features == 1:
        table_grad.view(-1).index_add_(0, idx, contrib.view(-1))
    else:
        table_grad.index_add_(0, idx, contrib)


def encode_forward(
    x01: torch.Tensor, params: torch.Tensor, layouts: Sequence[LevelLayout], n_features: int
) -> torch.Tensor:
    """Hash-grid features (no autograd bookkeeping).

    Args:
        x01: [N, 3] float32/float64 points in [0, 1]^3.
        params: [n_params] flat table in tcnn layout.
        layouts: per-level layouts (:func:`level_layouts`).
        n_features: features per level F.

    Returns:
        [N, L * F] features in ``params.dtype``.
    """
    n = x01.shape[0]
    xt = x01.t().contiguous()
    out = torch.empty(n, len(layouts), n_features, dtype=params.dtype, device=params.device)
    for layout in layouts:
        corner, frac = cell_coordinates(xt, layout.scale)
        idx = corner_indices(corner, layout)
        w = corner_weights(axis_weights(frac.to(params.dtype))).view(8, n, 1)
        feats = _gather(_level_table(params, layout, n_features), idx)
        out[:, layout.level] = (w * feats).sum(0)
    return out.view(n, len(layouts) * n_features)


def encode_backward(
    grad_out: torch.Tensor,
    x01: torch.Tensor,
    params: torch.Tensor,
    layouts: Sequence[LevelLayout],
    n_features: int,
    need_params: bool,
    need_x: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of a scalar loss with respect to the table and to the points.

    Args:
        grad_out: [N, L * F] dLoss/dfeatures.
        x01, params, layouts, n_features: as in :func:`encode_forward`.
        need_params: compute the [n_params] table gradient.
        need_x: compute the [N, 3] point gradient (the encoding is only C0 across cell faces; this
            is the one-sided derivative of the cell the point falls in, as in tcnn).

    Returns:
        (grad_params [n_params] or None, grad_x [N, 3] or None).
    """
    n = x01.shape[0]
    xt = x01.t().contiguous()
    grad_params = torch.zeros_like(params) if need_params else None
    grad_xt = torch.zeros(3, n, dtype=params.dtype, device=params.device) if need_x else None
    grad_out = grad_out.to(params.dtype).view(n, len(layouts), n_features)
    for layout in layouts:
        g = grad_out[:, layout.level]  # [N, F]
        corner, frac = cell_coordinates(xt, layout.scale)
        idx = corner_indices(corner, layout)
        wa = axis_weights(frac.to(params.dtype))
        w = corner_weights(wa).view(8, n, 1)
        if grad_params is not None:
            contrib = (w * g).view(8 * n, n_features)
            _scatter_add(_level_table(grad_params, layout, n_features), idx.view(-1), contrib)
        if grad_xt is not None:
            feats = _gather(_level_table(params, layout, n_features), idx)
            s = (feats * g).sum(-1).view(2, 2, 2, n)  # dLoss/dw_c, axes (z, y, x, point)
            wx, wy, wz = wa[0], wa[1], wa[2]
            dx = ((s[:, :, 1] - s[:, :, 0]) * (wz[:, None] * wy[None, :])).sum((0, 1))
            dy = ((s[:, 1] - s[:, 0]) * (wz[:, None] * wx[None, :])).sum((0, 1))
            dz = ((s[1] - s[0]) * (wy[:, None] * wx[None, :])).sum((0, 1))
            grad_xt += torch.stack((dx, dy, dz)) * layout.scale
    grad_x = None if grad_xt is None else grad_xt.t().to(x01.dtype).contiguous()
    return grad_params, grad_x


class _HashGridFunction(torch.autograd.Function):
    """Autograd wrapper.

    The backward is written with differentiable torch ops, so with ``create_graph=True`` autograd
    records it and second derivatives work (e.g. a loss on analytic normals ``d features / d x``
    back-propagates to the table and the points), matching tcnn's backward-of-backward support.
    """

    @staticmethod
    def forward(ctx, x01, params, layouts, n_features):  # type: ignore[override]
        ctx.save_for_backward(x01, params)
        ctx.layouts = layouts
        ctx.n_features = n_features
        return encode_forward(x01, params, layouts, n_features)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x01, params = ctx.saved_tensors
        grad_params, grad_x = encode_backward(
            grad_out.contiguous(),
            x01,
            params,
            ctx.layouts,
            ctx.n_features,
            need_params=ctx.needs_input_grad[1],
            need_x=ctx.needs_input_grad[0],
        )
        return grad_x, grad_params, None, None


def hash_grid_encode(
    x01: torch.Tensor, params: torch.Tensor, layouts: Sequence[LevelLayout], n_features: int
) -> torch.Tensor:
    """Differentiable hash-grid encoding (pure torch).

    Args:
        x01: [N, 3] points in [0, 1]^3, float32 (float64 allowed for gradient checks, with float64
            ``params``).
        params: [n_params] flat table in tcnn layout.
        layouts: tuple of :class:`LevelLayout` for the grid.
        n_features: features per level F.

    Returns:
        [N, L * F] features, ``params.dtype``. Gradients flow to ``params`` and to ``x01``,
        including second order (``create_graph=True``).
    """
    if x01.ndim != 2 or x01.shape[1] != 3:
        raise ValueError(f"hash_grid_encode expects points [N, 3], got {tuple(x01.shape)}")
    if params.ndim != 1:
        raise ValueError("hash_grid_encode expects a flat parameter vector")
    return _HashGridFunction.apply(x01.contiguous(), params, tuple(layouts), n_features)
