"""Triton multiresolution hash-grid encoding: the same table layout and semantics as the torch path.

Importing this module needs ``triton``; :mod:`hashgrid` imports it lazily, only when a CUDA input
(or Triton's interpreter) asks for the Triton backend, so ``import a3d_mesh`` never needs triton.

Semantics are :mod:`hashgrid_torch`'s (tiny-cuda-nn's ``HashGrid``, linear interpolation), per
level ``l`` and point ``x in [0,1]^3``:

- ``p = fmaf(s_l, x, 0.5)`` in float32 (tcnn's ``pos_fract``; the torch path reproduces this fma by
  rounding a float64 product once, the two agree except for vanishingly rare double roundings),
  ``g = floor(p)``, ``t = p - g``;
- corner ``c = c_x + 2 c_y + 4 c_z`` has weight ``(w_x * w_y) * w_z``, ``w_d = c_d ? t_d : 1 - t_d``;
- its entry in the level is, in uint32 arithmetic (wrapping like tcnn's), ``(x + y r + z r^2) mod
  T_l`` for a dense level or ``(x * 1 ^ y * 2654435761 ^ z * 805459861) mod T_l`` for a hashed one,
  with ``(x, y, z) = g + c``; negative corners (points below about ``-0.5 / s_l``) wrap through the
  uint32 cast as in tcnn. The int32 cell index overflows only for ``|s_l x| > 2^31``, far outside
  any input this project produces (the torch path uses int64 there);
- the flat table holds entry ``e`` of level ``l``, feature ``f`` at ``(O_l + e) * F + f``;
- output column ``l * F + f`` = ``sum_c w_c * table[O_l + e_c, f]``, corners summed in ``c`` order.

Kernels (one program = ``BLOCK`` points):

- forward: grid ``(ceil(N / BLOCK), L)``, one level per program, no atomics;
- backward: grid ``ceil(N / BLOCK)``, a loop over the levels. The table gradient is a scatter-add
  of ``w_c * dL/dout`` with float32 atomics (so its summation order, hence its last bits, vary from
  run to run, like tcnn's); the point gradient (the torch path's, and tcnn's: the one-sided
  derivative inside the point's cell, ``s_l * d(trilinear)/dp``) is summed over levels in
  registers, deterministically.

Autograd matches the torch path: gradients flow to ``params`` and to ``x01``. Second derivatives
(``create_graph=True``, e.g. a loss on analytic normals) are delegated to the torch path's
differentiable backward, so they are exact too, at the torch path's speed.

Supported: float32 points and table, ``F`` in 1..8 features per level (padded to a power of two in
registers), contiguous tensors on a CUDA device (or CPU tensors under ``TRITON_INTERPRET=1``), up
to about 7e8 points a call (int32 offsets ``3 n``; chunk larger batches).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from .hashgrid_layout import LevelLayout
from .hashgrid_torch import encode_backward as torch_encode_backward

# Points per program (one per thread at Triton's default 4 warps). 128 keeps the 8 corners x F
# features of a block in registers for F <= 2 (the project's default).
BLOCK = 128
# tcnn's coherent prime hash factors for y and z (x uses 1). Globals must be constexpr in Triton.
_PRIME_Y = tl.constexpr(2654435761)
_PRIME_Z = tl.constexpr(805459861)
# Launch option: no mul+add contraction into fma, so the float32 roundings follow the torch
# reference's (weights ``(w_x * w_y) * w_z``, sums corner by corner). It also silences Triton
# 3.9's warning about the unset default.
_LAUNCH = {"enable_fp_fusion": False}


@triton.jit
def _corner_entry(ix, iy, iz, res, size, dense):
    """Entry (uint32, in ``[0, T_l)``) of corner ``(ix, iy, iz)`` (uint32 [BLOCK]) of one level."""
    dense_idx = ix + iy * res + iz * (res * res)
    hashed_idx = ix ^ (iy * _PRIME_Y) ^ (iz * _PRIME_Z)
    return tl.where(dense != 0, dense_idx, hashed_idx) % size


@triton.jit
def _cell(x_ptr, offs, mask, scale):
    """Lower cell corner (uint32 [BLOCK] x 3) and fractional position (float32 [BLOCK] x 3)."""
    px = tl.fma(tl.load(x_ptr + offs * 3 + 0, mask=mask, other=0.0), scale, 0.5)
    py = tl.fma(tl.load(x_ptr + offs * 3 + 1, mask=mask, other=0.0), scale, 0.5)
    pz = tl.fma(tl.load(x_ptr + offs * 3 + 2, mask=mask, other=0.0), scale, 0.5)
    fx, fy, fz = tl.floor(px), tl.floor(py), tl.floor(pz)
    # float -> int32 -> uint32 (bit cast): negative cells wrap modulo 2^32 like tcnn's uint32 cast.
    gx = fx.to(tl.int32).to(tl.uint32, bitcast=True)
    gy = fy.to(tl.int32).to(tl.uint32, bitcast=True)
    gz = fz.to(tl.int32).to(tl.uint32, bitcast=True)
    return gx, gy, gz, px - fx, py - fy, pz - fz


@triton.jit
def _level_meta(scale_ptr, res_ptr, size_ptr, dense_ptr, offset_ptr, lvl):
    """Scalars of level ``lvl``: float32 scale, uint32 resolution and size, int32 dense, int64 offset."""
    scale = tl.load(scale_ptr + lvl)
    res = tl.load(res_ptr + lvl).to(tl.uint32)
    size = tl.load(size_ptr + lvl).to(tl.uint32)
    dense = tl.load(dense_ptr + lvl)
    offset = tl.load(offset_ptr + lvl)
    return scale, res, size, dense, offset


@triton.jit
def _forward_kernel(x_ptr, params_ptr, out_ptr, scale_ptr, res_ptr, size_ptr, dense_ptr, offset_ptr, n_points,
                    N_LEVELS: tl.constexpr, F: tl.constexpr, F_PAD: tl.constexpr, BLOCK_N: tl.constexpr):
    """``out[n, l * F + f]`` for the points of one block at level ``program_id(1)``.

    x: [N, 3] float32, params: [n_params] float32 (tcnn layout), out: [N, L * F] float32.
    """
    lvl = tl.program_id(1)
    offs = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = offs < n_points
    feat = tl.arange(0, F_PAD)
    fmask = mask[:, None] & (feat[None, :] < F)
    scale, res, size, dense, offset = _level_meta(scale_ptr, res_ptr, size_ptr, dense_ptr, offset_ptr, lvl)
    gx, gy, gz, tx, ty, tz = _cell(x_ptr, offs, mask, scale)
    acc = tl.zeros((BLOCK_N, F_PAD), dtype=tl.float32)
    for c in tl.static_range(8):
        cx = c & 1
        cy = (c >> 1) & 1
        cz = (c >> 2) & 1
        wx = tx if cx else 1.0 - tx
        wy = ty if cy else 1.0 - ty
        wz = tz if cz else 1.0 - tz
        w = (wx * wy) * wz
        entry = _corner_entry(gx + cx, gy + cy, gz + cz, res, size, dense)
        rows = (offset + entry.to(tl.int64)) * F
        vals = tl.load(params_ptr + rows[:, None] + feat[None, :], mask=fmask, other=0.0)
        acc += w[:, None] * vals
    out_cols = lvl * F + feat
    tl.store(out_ptr + offs.to(tl.int64)[:, None] * (N_LEVELS * F) + out_cols[None, :], acc, mask=fmask)


@triton.jit
def _backward_kernel(grad_out_ptr, x_ptr, params_ptr, grad_params_ptr, grad_x_ptr, scale_ptr, res_ptr, size_ptr,
                     dense_ptr, offset_ptr, n_points, N_LEVELS: tl.constexpr, F: tl.constexpr, F_PAD: tl.constexpr,
                     NEED_PARAMS: tl.constexpr, NEED_X: tl.constexpr, BLOCK_N: tl.constexpr):
    """Table gradient (atomic scatter-add) and point gradient of one block of points, all levels.

    grad_out: [N, L * F] float32; grad_params: [n_params] float32, zeroed by the caller;
    grad_x: [N, 3] float32, written (not accumulated).
    """
    offs = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = offs < n_points
    feat = tl.arange(0, F_PAD)
    fmask = mask[:, None] & (feat[None, :] < F)
    row_out = offs.to(tl.int64)[:, None] * (N_LEVELS * F)
    dx = tl.zeros((BLOCK_N,), dtype=tl.float32)
    dy = tl.zeros((BLOCK_N,), dtype=tl.float32)
    dz = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for lvl in range(N_LEVELS):
        scale, res, size, dense, offset = _level_meta(scale_ptr, res_ptr, size_ptr, dense_ptr, offset_ptr, lvl)
        gx, gy, gz, tx, ty, tz = _cell(x_ptr, offs, mask, scale)
        g = tl.load(grad_out_ptr + row_out + (lvl * F + feat)[None, :], mask=fmask, other=0.0)
        # dL/dw_c per corner, kept as named locals (static_range unrolls; no list indexing in Triton).
        lx = tl.zeros((BLOCK_N,), dtype=tl.float32)
        ly = tl.zeros((BLOCK_N,), dtype=tl.float32)
        lz = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for c in tl.static_range(8):
            cx = c & 1
            cy = (c >> 1) & 1
            cz = (c >> 2) & 1
            wx = tx if cx else 1.0 - tx
            wy = ty if cy else 1.0 - ty
            wz = tz if cz else 1.0 - tz
            entry = _corner_entry(gx + cx, gy + cy, gz + cz, res, size, dense)
            ptrs = (offset + entry.to(tl.int64))[:, None] * F + feat[None, :]
            if NEED_PARAMS:
                w = (wx * wy) * wz
                tl.atomic_add(grad_params_ptr + ptrs, w[:, None] * g, mask=fmask)
            if NEED_X:
                s = tl.sum(tl.load(params_ptr + ptrs, mask=fmask, other=0.0) * g, axis=1)
                # d w_c / d t_d = +-(product of the other two axis weights); the sign is the corner bit.
                sx = s if cx else -s
                sy = s if cy else -s
                sz = s if cz else -s
                lx += sx * (wz * wy)
                ly += sy * (wz * wx)
                lz += sz * (wy * wx)
        if NEED_X:
            dx += lx * scale
            dy += ly * scale
            dz += lz * scale
    if NEED_X:
        tl.store(grad_x_ptr + offs * 3 + 0, dx, mask=mask)
        tl.store(grad_x_ptr + offs * 3 + 1, dy, mask=mask)
        tl.store(grad_x_ptr + offs * 3 + 2, dz, mask=mask)


def level_tables(layouts: Sequence[LevelLayout], device: torch.device) -> dict[str, torch.Tensor]:
    """Per-level kernel arguments on ``device``: [L] scale (float32), res/size/dense (int32), offset (int64).

    ``res`` and ``size`` fit in int32 (``size <= 2^30``; ``res^3`` may not, hence uint32 products in
    the kernel, which wrap like tcnn's).
    """
    return {
        "scale": torch.tensor([lay.scale for lay in layouts], dtype=torch.float32, device=device),
        "res": torch.tensor([lay.resolution for lay in layouts], dtype=torch.int32, device=device),
        "size": torch.tensor([lay.size for lay in layouts], dtype=torch.int32, device=device),
        "dense": torch.tensor([int(lay.dense) for lay in layouts], dtype=torch.int32, device=device),
        "offset": torch.tensor([lay.offset for lay in layouts], dtype=torch.int64, device=device),
    }


_TABLE_CACHE: dict[tuple[tuple[LevelLayout, ...], str], dict[str, torch.Tensor]] = {}


def _tables(layouts: tuple[LevelLayout, ...], device: torch.device) -> dict[str, torch.Tensor]:
    """:func:`level_tables`, cached per (layouts, device): building them costs a host-to-device copy
    (and a sync) per call otherwise."""
    key = (layouts, str(device))
    if key not in _TABLE_CACHE:
        _TABLE_CACHE[key] = level_tables(layouts, device)
    return _TABLE_CACHE[key]


def _f_pad(n_features: int) -> int:
    if not 1 <= n_features <= 8:
        raise ValueError(f"the Triton hash grid supports 1..8 features per level, got {n_features}")
    return triton.next_power_of_2(n_features)


def encode_forward(x01: torch.Tensor, params: torch.Tensor, layouts: Sequence[LevelLayout],
                   n_features: int) -> torch.Tensor:
    """[N, 3] float32 points, [n_params] float32 table -> [N, L * F] float32 features (no autograd)."""
    layouts = tuple(layouts)
    n = x01.shape[0]
    out = torch.empty(n, len(layouts) * n_features, dtype=torch.float32, device=x01.device)
    if n == 0:
        return out
    t = _tables(layouts, x01.device)
    grid = (triton.cdiv(n, BLOCK), len(layouts))
    _forward_kernel[grid](x01, params, out, t["scale"], t["res"], t["size"], t["dense"], t["offset"], n,
                          N_LEVELS=len(layouts), F=n_features, F_PAD=_f_pad(n_features), BLOCK_N=BLOCK,
                          **_LAUNCH)
    return out


def encode_backward(grad_out: torch.Tensor, x01: torch.Tensor, params: torch.Tensor,
                    layouts: Sequence[LevelLayout], n_features: int, need_params: bool, need_x: bool
                    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(grad_params [n_params] or None, grad_x [N, 3] or None) for ``dL/dout`` [N, L * F]."""
    layouts = tuple(layouts)
    n = x01.shape[0]
    grad_params = torch.zeros_like(params) if need_params else None
    grad_x = torch.empty_like(x01) if need_x else None
    if n == 0 or not (need_params or need_x):
        return grad_params, (None if grad_x is None else grad_x.zero_())
    t = _tables(layouts, x01.device)
    # Unused pointer arguments still need a tensor of the right device; ``params`` stands in.
    _backward_kernel[(triton.cdiv(n, BLOCK),)](
        grad_out.contiguous().float(), x01, params, params if grad_params is None else grad_params,
        params if grad_x is None else grad_x, t["scale"], t["res"], t["size"], t["dense"], t["offset"], n,
        N_LEVELS=len(layouts), F=n_features, F_PAD=_f_pad(n_features), NEED_PARAMS=need_params,
        NEED_X=need_x, BLOCK_N=BLOCK, **_LAUNCH)
    return grad_params, grad_x


_LEVEL_ARGS = {"scale_ptr": "*fp32", "res_ptr": "*i32", "size_ptr": "*i32", "dense_ptr": "*i32",
               "offset_ptr": "*i64", "n_points": "i32", "N_LEVELS": "constexpr", "F": "constexpr",
               "F_PAD": "constexpr"}


def compile_kernels(arch: int = 90, n_levels: int = 16, n_features: int = 2) -> list[str]:
    """Compile every kernel variant to a cubin for CUDA compute capability ``arch`` on the host:
    no GPU needed (Triton ships ``ptxas``). Catches what the interpreter does not check (types,
    constexpr rules, lowering). Returns one line per variant: name and registers per thread, or
    "?" where this Triton version does not report them.

    Raises:
        triton.compiler.errors.CompilationError (or the backend's error) when a kernel does not compile.
    """
    from triton.backends.compiler import GPUTarget  # noqa: PLC0415 - compile-time API, used here only
    from triton.compiler import ASTSource  # noqa: PLC0415

    target = GPUTarget("cuda", arch, 32)
    shape = {"N_LEVELS": n_levels, "F": n_features, "F_PAD": _f_pad(n_features), "BLOCK_N": BLOCK}
    variants = [("forward", _forward_kernel,
                 {"x_ptr": "*fp32", "params_ptr": "*fp32", "out_ptr": "*fp32", **_LEVEL_ARGS, "BLOCK_N": "constexpr"},
                 shape)]
    bwd_sig = {"grad_out_ptr": "*fp32", "x_ptr": "*fp32", "params_ptr": "*fp32", "grad_params_ptr": "*fp32",
               "grad_x_ptr": "*fp32", **_LEVEL_ARGS, "NEED_PARAMS": "constexpr", "NEED_X": "constexpr",
               "BLOCK_N": "constexpr"}
    for need_params, need_x in ((True, False), (False, True), (True, True)):
        variants.append((f"backward params={need_params} x={need_x}", _backward_kernel, bwd_sig,
                         {**shape, "NEED_PARAMS": need_params, "NEED_X": need_x}))
    lines = []
    for name, fn, signature, constexprs in variants:
        kernel = triton.compile(ASTSource(fn, signature, constexprs=constexprs), target=target, options=_LAUNCH)
        lines.append(f"{name}: sm_{arch} ok, {_resource_usage(kernel.asm.get('cubin'))}")
    return lines


def _resource_usage(cubin: bytes | None) -> str:
    """``"REG:40 STACK:0 SHARED:1024 LOCAL:0"`` from the ``cuobjdump`` shipped with Triton (LOCAL or
    STACK > 0 means register spills), or ``"resource usage unknown"``."""
    import re  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import tempfile  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not cubin or not tool.exists():
        return "resource usage unknown"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        try:
            text = subprocess.run([str(tool), "-res-usage", str(path)], capture_output=True, text=True,
                                  timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            return "resource usage unknown"
    fields = re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", text)
    return " ".join(f"{k}:{v}" for k, v in fields) or "resource usage unknown"


class _TritonHashGridFunction(torch.autograd.Function):
    """Autograd wrapper: Triton forward and first-order backward; with ``create_graph=True`` the
    backward is the torch path's differentiable one, so higher derivatives match the torch path."""

    @staticmethod
    def forward(ctx, x01, params, layouts, n_features):  # type: ignore[override]
        ctx.save_for_backward(x01, params)
        ctx.layouts = layouts
        ctx.n_features = n_features
        return encode_forward(x01, params, layouts, n_features)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x01, params = ctx.saved_tensors
        need_x, need_params = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # Grad mode is on inside backward exactly when the caller asked for create_graph=True.
        backward = torch_encode_backward if torch.is_grad_enabled() else encode_backward
        grad_params, grad_x = backward(grad_out.contiguous(), x01, params, ctx.layouts, ctx.n_features,
                                       need_params=need_params, need_x=need_x)
        return grad_x, grad_params, None, None


def hash_grid_encode_triton(x01: torch.Tensor, params: torch.Tensor, layouts: Sequence[LevelLayout],
                            n_features: int) -> torch.Tensor:
    """Differentiable hash-grid encoding with the Triton kernels; same contract as
    :func:`hashgrid_torch.hash_grid_encode`.

    Args:
        x01: [N, 3] float32 points in [0, 1]^3 (tcnn semantics outside: indices wrap).
        params: [n_params] float32 flat table in tcnn layout, on the same device as ``x01``.
        layouts: per-level :class:`LevelLayout` of the grid.
        n_features: features per level F (1..8).

    Returns:
        [N, L * F] float32 features; column ``l * F + f`` is feature f of level l. Gradients flow to
        ``params`` and ``x01`` (second order through the torch path's backward).
    """
    if x01.ndim != 2 or x01.shape[1] != 3:
        raise ValueError(f"hash_grid_encode_triton expects points [N, 3], got {tuple(x01.shape)}")
    if params.ndim != 1:
        raise ValueError("hash_grid_encode_triton expects a flat parameter vector")
    if x01.dtype != torch.float32 or params.dtype != torch.float32:
        raise TypeError(f"the Triton hash grid is float32 only, got points {x01.dtype}, table {params.dtype}")
    if x01.device != params.device:
        raise ValueError(f"points on {x01.device}, table on {params.device}")
    _f_pad(n_features)
    return _TritonHashGridFunction.apply(x01.contiguous(), params.contiguous(), tuple(layouts), n_features)
