"""``export_asset``: one object (a prompt or a hybrid) from world-frame mesh to engine files.

Pipeline: validate -> clean (and decimate to the face budget) -> UV atlas (xatlas in a child,
with fallbacks) -> bake ``color_fn`` in the *world* frame -> apply the set's transform to the
geometry only -> write each format atomically -> manifest record with file hashes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from a3d_mesh.config_ranges import EXPORT_FORMATS

from a3d_mesh.geometry.regularizers import vertex_normals

from .bake import bake_texture, texture_png_bytes
from .cleanup import MIN_COMPONENT_AREA, apply_face_budget, clean_mesh
from .errors import ExportError
from .fbx import find_blender, write_fbx
from .frame import IDENTITY, ArrayLike, SetTransform
from .gltf import build_glb, write_glb
from .normalmap import bake_normal_map, vertex_tangents
from .obj import write_obj
from .usdz import import_pxr, write_usdz
from .uv import unwrap

FORMATS = EXPORT_FORMATS  # the one list, beside the config checks that name it
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: Colour of an asset exported without a colour field: light grey, so geometry reads well.
DEFAULT_GREY = 0.8


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's contents."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_formats(formats: Sequence[str]) -> list[str]:
    """Lower-case, de-duplicate and validate format names (order kept)."""
    out: list[str] = []
    for fmt in formats:
        f = fmt.strip().lower()
        if f not in FORMATS:
            raise ExportError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
        if f not in out:
            out.append(f)
    if not out:
        raise ExportError("no export format given")
    return out


def check_tools(formats: Sequence[str]) -> list[str]:
    """:func:`check_formats`, then the tools they need (Blender for FBX, usd-core for USDZ).

    A missing tool would fail every asset alike, so it is one line before any file is written;
    only a writer failing mid-way (one asset's FBX) is recorded per format instead.
    """
    fmts = check_formats(formats)
    if "fbx" in fmts:
        find_blender()
    if "usdz" in fmts:
        import_pxr()
    return fmts


def _constant_color(points: torch.Tensor) -> torch.Tensor:
    return torch.full_like(points, DEFAULT_GREY)


def _write_formats(
    out_dir: Path, name: str, fmts: Sequence[str], mesh: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bytes],
    extras: dict[str, Any], nrm_png: bytes | None, tangents: np.ndarray | None,
) -> tuple[dict[str, Path], list[Path], dict[str, str]]:
    """Write ``mesh = (verts, faces, uv, normals, png)`` in each format; return (main file per
    format, every file written, ``{format: one-line reason}`` for the formats that failed).

    A writer's :class:`ExportError` (Blender's own error, usd-core failing to package) fails only
    its format: the others are still written. Anything else (a full disk, a bug) propagates.
    """
    written: dict[str, Path] = {}
    hashed: list[Path] = []
    failed: dict[str, str] = {}
    for fmt in fmts:
        try:
            if fmt == "glb":
                written["glb"] = write_glb(out_dir / f"{name}.glb", *mesh, name, extras, nrm_png, tangents)
                hashed.append(written["glb"])
            elif fmt == "obj":
                parts = write_obj(out_dir / name, name, *mesh, normal_png=nrm_png)
                written["obj"] = parts["obj"]
                hashed += list(parts.values())
            elif fmt == "fbx":
                written["fbx"] = write_fbx(out_dir / f"{name}.fbx", build_glb(*mesh, name, extras, nrm_png, tangents))
                hashed.append(written["fbx"])
            else:
                written["usdz"] = write_usdz(out_dir / f"{name}.usdz", *mesh, name, normal_png=nrm_png)
                hashed.append(written["usdz"])
        except ExportError as exc:
            failed[fmt] = " ".join(str(exc).split()) or type(exc).__name__  # one line for the manifest
    return written, hashed, failed


def failures(records: Sequence[dict[str, Any]]) -> str | None:
    """One line naming every asset format that failed in ``records`` (their ``"failed"``), or None."""
    parts = [f"{r['name']}.{fmt}: {why}" for r in records for fmt, why in r.get("failed", {}).items()]
    return "; ".join(parts) + " (the other files and the manifest were written)" if parts else None


def export_asset(
    name: str,
    verts: ArrayLike,
    faces: ArrayLike,
    color_fn: Callable[[torch.Tensor], torch.Tensor] | None,
    out_dir: str | Path,
    formats: Sequence[str] = ("glb",),
    texture_size: int = 1024,
    target_faces: int | None = None,
    transform: SetTransform | None = None,
    uv_timeout_s: float = 120.0,
    normal_map: bool = False,
    min_component_area: float = MIN_COMPONENT_AREA,
) -> dict[str, Any]:
    """Clean, unwrap, bake and write one asset; return its manifest record.

    Args:
        name: asset name, used for file names (letters, digits, ``_ . -``; no path separators).
        verts: ``[V,3]`` float, the set's world frame (tensor on any device, or array).
        faces: ``[F,3]`` int, counter-clockwise seen from outside.
        color_fn: world points ``[N,3]`` float32 -> rgb ``[N,3]`` in [0, 1], evaluated in the
            world frame *before* ``transform`` (for a hybrid: the albedo at the code u(x)); it is
            called on ``verts``' device. ``None`` bakes a uniform light grey.
        out_dir: directory for the files; OBJ goes to ``out_dir/name/`` (one folder per asset).
        formats: any of ``glb``, ``obj``, ``fbx`` (needs Blender), ``usdz`` (needs usd-core).
        texture_size: square base-colour texture size in texels.
        target_faces: optional face budget (quadric decimation after cleanup).
        transform: the set's :class:`SetTransform` (identity if ``None``), applied to the
            written geometry only.
        uv_timeout_s: time limit of each xatlas attempt.
        normal_map: also bake a tangent-space normal map from the cleaned full-resolution mesh
            (worth it when the face budget or the xatlas retry decimated the mesh); written to
            GLB (with tangents), OBJ (``map_Bump``), USDZ and, through the GLB, FBX.
        min_component_area: cleanup drops connected components whose area is below this
            fraction of the largest component's (0 keeps all); the removed ones are listed in
            ``cleanup["components"]``.

    Returns:
        ``{"name", "files": {format: path relative to out_dir}, "sha256": {relative path: hex},
        "n_vertices", "n_faces", "texture_size", "cleanup": report, "uv": {"method",
        "attempts"}, "transform": dict, "normal_map": bool}`` and, when a format's writer failed,
        ``"failed": {format: one-line reason}`` (the other formats are still written; see
        :func:`failures`); ``files["obj"]`` is the .obj, and its .mtl and .png files are hashed too.

    Raises:
        ExportError: bad name/format, empty or broken mesh, missing Blender / usd-core (a missing
            tool fails every asset alike, so it is refused before any file is written).
    """
    if not _NAME_OK.match(name):
        raise ExportError(f"asset name {name!r} must be letters, digits, '_', '.', '-' only")
    if texture_size < 16:
        raise ExportError(f"texture size {texture_size} is too small (need at least 16)")
    # Fail on missing tools before the slow steps, and before any file of this asset is written.
    fmts = check_tools(formats)
    out_dir = Path(out_dir)
    device = verts.device if isinstance(verts, torch.Tensor) else torch.device("cpu")
    transform = transform or IDENTITY

    high_v, high_f, report = clean_mesh(verts, faces, min_component_area=min_component_area)
    v, f = apply_face_budget(high_v, high_f, target_faces, report)
    uvr = unwrap(v, f, timeout_s=uv_timeout_s, texture_size=texture_size)
    texture = bake_texture(uvr.verts, uvr.faces, uvr.uv, color_fn or _constant_color, texture_size, device=device)
    png = texture_png_bytes(texture)
    # Normals come from the welded mesh so shading stays smooth across UV seams; a uniform scale
    # and a translation leave them unchanged.
    normals = vertex_normals(uvr.source_verts, uvr.source_faces)[uvr.vmapping]
    # Tangents and the map are computed in the world frame; a uniform scale and a translation
    # leave directions unchanged, so they stay valid for the transformed geometry.
    tangents = vertex_tangents(uvr.verts, uvr.faces, uvr.uv, normals) if normal_map else None
    nrm_png = None
    if tangents is not None:
        nmap = bake_normal_map(uvr.verts, uvr.faces, uvr.uv, normals, tangents, high_v, high_f, texture_size)
        nrm_png = texture_png_bytes(nmap)
    out_v = transform.apply(uvr.verts)
    extras = {"a3d_mesh": {"asset": name, "set_transform": transform.to_dict()}}

    mesh = (out_v, uvr.faces, uvr.uv, normals, png)
    written, hashed, failed = _write_formats(out_dir, name, fmts, mesh, extras, nrm_png, tangents)
    rel = lambda p: p.relative_to(out_dir).as_posix()  # noqa: E731 - tiny local helper
    return {
        "name": name,
        "files": {fmt: rel(p) for fmt, p in written.items()},
        "sha256": {rel(p): sha256_file(p) for p in hashed},
        "n_vertices": int(out_v.shape[0]),
        "n_faces": int(uvr.faces.shape[0]),
        "texture_size": int(texture_size),
        "cleanup": report,
        "uv": {"method": uvr.method, "attempts": list(uvr.attempts)},
        "transform": transform.to_dict(),
        "normal_map": nrm_png is not None,
        **({"failed": failed} if failed else {}),
    }
