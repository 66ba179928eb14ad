"""Compile a small C source at first use with the system compiler and load it through ctypes.

Shared by the C visibility pass (:mod:`._raster_c`) and the C pixel kernels (:mod:`._pixel_c`,
:mod:`._antialias_c`). This avoids ``torch.utils.cpp_extension`` (ninja, torch headers): the
source is built once with ``cc -O3 -shared`` into a per-user cache directory, keyed by a hash of
the source and flags, so an edited source gets a fresh library. ``-ffp-contract=off`` keeps
float arithmetic exactly as written (no fused multiply-adds), so float32 kernels reproduce the
torch reference bit for bit where they follow the same operation order.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-shared", "-fPIC"]


def cache_dir() -> Path:
    """Directory holding compiled libraries: ``$A3D_MESH_CACHE`` or ``~/.cache/a3d_mesh``."""
    root = os.environ.get("A3D_MESH_CACHE") or os.path.join(Path.home(), ".cache", "a3d_mesh")
    return Path(root) / "raster_c"


def _build(source: str, lib_path: Path, openmp: bool) -> None:
    """Compile ``source`` to ``lib_path`` atomically (concurrent builders cannot clash)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc/gcc) on PATH")
    lib_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=lib_path.parent) as tmp:
        src = Path(tmp) / "src.c"
        src.write_text(source)
        out = Path(tmp) / lib_path.name
        base = [cc, *_FLAGS, "-o", str(out), str(src), "-lm"]
        res = None
        if openmp:
            res = subprocess.run(base[:2] + ["-fopenmp"] + base[2:], capture_output=True, text=True)
        # Without libgomp, build serial: OpenMP only ever splits independent images.
        if res is None or res.returncode != 0:
            res = subprocess.run(base, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"C build failed: {res.stderr.strip()[:500]}")
        os.replace(out, lib_path)


def load(name: str, source: str, signatures: dict[str, tuple[Any, list[Any]]],
         openmp: bool = False) -> tuple[ctypes.CDLL | None, str | None]:
    """Build (once, cached by hash) and load ``source``: ``(library, None)`` or ``(None, why)``.

    Args:
        name: file-name stem of the library in :func:`cache_dir`.
        source: complete C translation unit.
        signatures: exported function name -> ``(ctypes restype or None, ctypes argtypes)``.
        openmp: try ``-fopenmp`` first.
    """
    key = "\0".join([source, " ".join(_FLAGS), str(openmp)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    lib_path = cache_dir() / f"{name}_{digest}.so"
    try:
        if not lib_path.exists():
            _build(source, lib_path, openmp)
        lib = ctypes.CDLL(str(lib_path))
        for fn_name, (restype, argtypes) in signatures.items():
            fn = getattr(lib, fn_name)
            fn.restype, fn.argtypes = restype, argtypes
        return lib, None
    except (OSError, RuntimeError, AttributeError) as exc:
        return None, str(exc)
