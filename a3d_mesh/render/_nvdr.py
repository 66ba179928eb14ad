"""Thin wrapper over nvdiffrast (``nvdiffrast.torch``) for the ``cuda`` backend.

nvdiffrast is imported lazily, never at module import. One ``RasterizeCudaContext`` is created
per CUDA device on first use and cached. Integer inputs are converted to the int32 nvdiffrast
requires at this boundary. Topology hashes and mip pyramids of the CPU path are plain tensors
and are not understood by nvdiffrast; they are only forwarded when they are nvdiffrast's own
wrapper objects.

Plugin loading on torch >= 2.9. nvdiffrast < 0.3.4 (diffrp-nvdiffrast 0.3.3.x included) JIT-builds
its plugin with ``torch.utils.cpp_extension.load`` and then imports it *by name*; torch >= 2.9
loads the built module from its file without putting the build folder on ``sys.path``, so that
import fails (``ModuleNotFoundError: No module named 'nvdiffrast_plugin_...'``) although the
build succeeded. :func:`module` wraps those versions' ``_get_plugin``: on exactly that error it
appends the plugin's build folder to ``sys.path`` and asks again (the build is found, not
repeated). nvdiffrast >= 0.3.4 (uses the module ``load`` returns) and 0.4 (built ahead of time)
are left alone.

:func:`disable` switches nvdiffrast off for the rest of the process (the preflight does so when it
fails or disagrees with the CPU path); ``available()`` is then False and ``auto`` takes the CPU path.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import re
import sys
import threading
from typing import Any, Callable

import torch

_CTX: dict[str, Any] = {}
_LOCK = threading.Lock()
_IMPORT_ERROR: str | None = None
_DISABLED: str | None = None
# NVlabs fixed the plugin import in 0.3.4; older versions (diffrp's 0.3.3.x) get the wrapper.
_FIXED_IN = (0, 3, 4)


def module() -> Any | None:
    """``nvdiffrast.torch`` if importable, else None (reason kept, see :func:`import_error`)."""
    global _IMPORT_ERROR
    if _IMPORT_ERROR is not None:
        return None
    try:
        import nvdiffrast.torch as dr  # Lazy: CUDA-only dependency.
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
        return None
    _fix_plugin_import()
    return dr


def import_error() -> str | None:
    """Why ``nvdiffrast.torch`` did not import (``"Type: message"``), or None."""
    return _IMPORT_ERROR


def available() -> bool:
    """True when nvdiffrast imports, has not been disabled, and a CUDA device exists."""
    return _DISABLED is None and torch.cuda.is_available() and module() is not None


def disable(reason: str) -> None:
    """Switch nvdiffrast off for the rest of the process (``auto`` then renders on the CPU path).

    Args:
        reason: one line, shown by :func:`disabled` and in the preflight report.
    """
    global _DISABLED
    _DISABLED = reason or "disabled"


def disabled() -> str | None:
    """The reason given to :func:`disable`, or None while nvdiffrast may be used."""
    return _DISABLED


def version() -> str:
    """``"<distribution> <version>"`` of the nvdiffrast in use, e.g. ``"diffrp-nvdiffrast 0.3.3.1"``
    or ``"nvdiffrast 0.4.0"`` (NVlabs); ``"nvdiffrast <__version__>"`` when no distribution owns it."""
    dists = sorted(set(importlib.metadata.packages_distributions().get("nvdiffrast", [])))
    if len(dists) == 1:
        try:
            return f"{dists[0]} {importlib.metadata.version(dists[0])}"
        except importlib.metadata.PackageNotFoundError:
            pass
    mod = sys.modules.get("nvdiffrast")
    found = getattr(mod, "__version__", "?")
    return f"nvdiffrast {found}" + (f" (installed by {' and '.join(dists)})" if len(dists) > 1 else "")


def _version_tuple(text: str) -> tuple[int, ...]:
    """Leading integers of a version string: ``"0.3.3.1"`` -> (0, 3, 3, 1); ``"0.4.0rc1"`` -> (0, 4, 0)."""
    parts = []
    for piece in str(text).split("."):
        m = re.match(r"\d+", piece)
        if m is None:
            break
        parts.append(int(m.group()))
        if m.end() != len(piece):
            break
    return tuple(parts)


def _fix_plugin_import() -> None:
    """Wrap ``nvdiffrast.torch.ops._get_plugin`` of nvdiffrast < 0.3.4 (once; see the module doc)."""
    ops = sys.modules.get("nvdiffrast.torch.ops")
    get_plugin = getattr(ops, "_get_plugin", None)
    if get_plugin is None or getattr(get_plugin, "_a3d_importable", False):
        return
    found = _version_tuple(getattr(sys.modules.get("nvdiffrast"), "__version__", ""))
    if not found or found >= _FIXED_IN:
        return
    ops._get_plugin = importable_plugin(get_plugin)


def importable_plugin(get_plugin: Callable[..., Any]) -> Callable[..., Any]:
    """``get_plugin`` that, when the plugin built but cannot be imported by name, puts the plugin's
    build folder (``torch.utils.cpp_extension``'s, under ``TORCH_EXTENSIONS_DIR`` if set) on
    ``sys.path`` and calls ``get_plugin`` once more. Any other error passes through unchanged."""

    @functools.wraps(get_plugin)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return get_plugin(*args, **kwargs)
        except ModuleNotFoundError as exc:
            name = exc.name or ""
            if not name.startswith("nvdiffrast_plugin"):
                raise
            from torch.utils.cpp_extension import _get_build_directory  # the folder load() built in

            folder = _get_build_directory(name, False)
            if folder in sys.path:
                raise
            sys.path.append(folder)  # appended: the unique plugin name shadows nothing
            importlib.invalidate_caches()
        return get_plugin(*args, **kwargs)

    wrapper._a3d_importable = True  # type: ignore[attr-defined]
    return wrapper


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
