"""Thin wrapper over nvdiffrast (``nvdiffrast.torch``) for the ``cuda`` backend.

nvdiffrast is imported lazily, never at module import. One ``RasterizeCudaContext`` is created
per CUDA device on first use and cached. Integer inputs are converted to the int32 nvdiffrast
requires at this boundary. Topology hashes and mip pyramids of the CPU path are plain tensors
and are not understood by nvdiffrast; they are only forwarded when they are nvdiffrast's own
wrapper objects.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

_CTX: dict[str, Any] = {}
_LOCK = threading.Lock()
_IMPORT_ERROR: str | None = None


def module() -> Any | None:
    """``nvdiffrast.torch`` if importable, else None (reason kept)."""
    global _IMPORT_ERROR
    if _IMPORT_ERROR is not None:
        return None
    try:
        import nvdiffrast.torch as dr  # Lazy: CUDA-only dependency.
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
        return None
    return dr


def available() -> bool:
    """True when nvdiffrast imports and a CUDA device exists."""
    return torch.cuda.is_available() and module() is not None


def _context(device: torch.device) -> Any:
    """Cached ``RasterizeCudaContext`` for ``device``."""
    dr = module()
    if dr is None:
        raise RuntimeError(f"nvdiffrast unavailable: {_IMPORT_ERROR}")
    key = str(device)
    with _LOCK:
        if key not in _CTX:
            _CTX[key] = dr.RasterizeCudaContext(device=device)
        return _CTX[key]


def _i32(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.to(torch.int32).contiguous()


def rasterize(pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int],
              ranges: torch.Tensor | None, grad_db: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``nvdiffrast.torch.rasterize`` with a cached context; ranges must live on the CPU."""
    dr = module()
    rng = None if ranges is None else _i32(ranges.cpu())
    return dr.rasterize(_context(pos.device), pos.contiguous(), _i32(tri),
                        (int(resolution[0]), int(resolution[1])), ranges=rng, grad_db=grad_db)


def interpolate(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor,
                rast_db: torch.Tensor | None, diff_attrs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``nvdiffrast.torch.interpolate``."""
    return module().interpolate(attr.contiguous(), rast, _i32(tri), rast_db=rast_db,
                                diff_attrs=diff_attrs)


def texture(tex: torch.Tensor, uv: torch.Tensor, uv_da: torch.Tensor | None,
            mip_level_bias: torch.Tensor | None, mip: Any, filter_mode: str,
            boundary_mode: str, max_mip_level: int | None) -> torch.Tensor:
    """``nvdiffrast.torch.texture`` (a list-of-tensors ``mip`` from the CPU path is dropped)."""
    dr = module()
    native_mip = None if isinstance(mip, (list, tuple)) else mip
    return dr.texture(tex.contiguous(), uv.contiguous(), uv_da=uv_da,
                      mip_level_bias=mip_level_bias, mip=native_mip, filter_mode=filter_mode,
                      boundary_mode=boundary_mode, max_mip_level=max_mip_level)


def antialias(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor,
              topology_hash: Any, pos_gradient_boost: float) -> torch.Tensor:
    """``nvdiffrast.torch.antialias`` (a tensor ``topology_hash`` from the CPU path is dropped)."""
    dr = module()
    th = None if isinstance(topology_hash, torch.Tensor) else topology_hash
    return dr.antialias(color.contiguous(), rast, pos.contiguous(), _i32(tri), topology_hash=th,
                        pos_gradient_boost=pos_gradient_boost)
