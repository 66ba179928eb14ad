"""UV atlas generation: xatlas in a child process with a time limit, and fallbacks.

xatlas is known to crash the whole process on some clean high-resolution meshes, so it never
runs in-process: a crash, a timeout or garbage output costs one child process and falls back to
(1) decimating the mesh and retrying xatlas, then (2) a simple per-triangle atlas that cannot fail.

UV convention: ``uv`` in [0, 1]^2 with v pointing up, i.e. v = 0 is the *bottom* row of the
texture image (OBJ / OpenGL convention). Writers that use top-left origins (glTF) flip v.
"""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cleanup import decimate, validate_mesh
from .frame import ArrayLike

CHILD_SCRIPT = Path(__file__).with_name("xatlas_child.py")
#: Chart settings tried for each asset, the atlas whose triangles cover the most texels kept
#: (:func:`atlas_utilisation`): ``(largest chart as a fraction of the surface, roundness weight,
#: normal deviation weight)``, NaN for xatlas' default. Which packs best depends on the mesh, and
#: no one setting wins: at 1024 px on the v2 toy demo's meshes (chair, bench, table of two runs)
#: the four settings' best is 63-67 %, while each alone drops to 53-60 % on one of them; clean
#: analytic meshes pack best with xatlas' own weights and small charts (61-67 %, the first).
#: Uncapped charts with xatlas' default weights grow long and pack badly.
CHART_SETTINGS = ((0.01, float("nan"), float("nan")), (0.04, 0.2, 0.5), (0.25, 0.2, 0.5), (0.1, 0.3, 0.3))
#: The first ``FIRST_SETTINGS`` of :data:`CHART_SETTINGS` are always tried; the rest only when
#: their best atlas fills less than ``UTILISATION_TARGET`` of the texels. The large, round charts
#: of the last two pack slowly under brute force (2-4.6x the unwrap time of the first two) and
#: gain nothing on meshes the first two already pack well (0-1.3 points on a torus and on
#: marching-tets chairs and tables, benchmarks/RESULTS.md); on the demo's learned meshes, where
#: the first two give 56-60 %, they gain 4-11 points.
FIRST_SETTINGS = 2
UTILISATION_TARGET = 0.60
#: xatlas' exhaustive packing search: +4-10 points of utilisation, but its time grows with the
#: resolution (1 s at 1024 px, 5 s for a 20k-face torus), so it is used up to this size only.
BRUTE_FORCE_MAX_RESOLUTION = 1024


def default_padding(texture_size: int) -> int:
    """Gutter between charts in texels: 1 at 256 px, 2 at 1024, 4 at 2048 (the same fraction of
    the texture at every size, at least one texel so that neighbouring charts never touch)."""
    return max(1, round(texture_size / 512))


@dataclass
class UVResult:
    """A UV-unwrapped mesh, vertices split along UV seams.

    Attributes:
        verts: ``[V',3]`` float32, world frame, ``source_verts[vmapping]``.
        faces: ``[F',3]`` int64 into ``verts`` / ``uv``.
        uv: ``[V',2]`` float32 in [0, 1], v up (v = 0 is the bottom image row).
        vmapping: ``[V']`` int64, the ``source_verts`` row each split vertex copies.
        source_verts: ``[Vs,3]`` float32, the welded mesh that was unwrapped (the input, or its
            decimation when xatlas had to be retried); use it for smooth normals across seams.
        source_faces: ``[F',3]`` int64 into ``source_verts``, same face order as ``faces``.
        method: ``"xatlas"``, ``"xatlas-decimated"`` or ``"per-triangle"``.
        attempts: one line per failed attempt (why it fell back), empty when xatlas just worked.
        utilisation: share of the ``texture_size`` atlas' texels its triangles cover
            (:func:`atlas_utilisation`).
    """

    verts: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    vmapping: np.ndarray
    source_verts: np.ndarray
    source_faces: np.ndarray
    method: str
    attempts: list[str] = field(default_factory=list)
    utilisation: float = float("nan")


def child_command(job: Path, result: Path) -> list[str]:
    """The command line that runs xatlas on ``job`` and writes ``result`` (tests swap it)."""
    return [sys.executable, str(CHILD_SCRIPT), str(job), str(result)]


def _check_result(vmapping: np.ndarray, faces: np.ndarray, uv: np.ndarray, n_src: int, n_faces: int) -> None:
    """Reject malformed child output rather than writing a broken asset."""
    if faces.shape != (n_faces, 3):
        raise ValueError(f"xatlas returned {faces.shape[0]} faces for {n_faces}")
    if uv.ndim != 2 or uv.shape[1] != 2 or uv.shape[0] != vmapping.shape[0]:
        raise ValueError("xatlas returned inconsistent uv / vmapping shapes")
    if vmapping.size == 0 or vmapping.max() >= n_src or faces.max() >= uv.shape[0]:
        raise ValueError("xatlas returned out-of-range indices")
    if not np.isfinite(uv).all() or uv.min() < -1e-4 or uv.max() > 1 + 1e-4:
        raise ValueError("xatlas returned uvs outside [0, 1]")


def surface_area(verts: np.ndarray, faces: np.ndarray) -> float:
    """Total area of a triangle mesh (world units squared)."""
    v = verts.astype(np.float64)
    cross = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    return float(0.5 * np.linalg.norm(cross, axis=1).sum())


def atlas_utilisation(uv: np.ndarray, faces: np.ndarray, resolution: int) -> float:
    """Fraction of a ``resolution`` x ``resolution`` texture's texels that the atlas covers.

    A texel counts when its centre lies in a UV triangle: exactly the texels the bake fills
    with surface colour (same rasteriser); the rest is padding and pull-push filler.

    Args:
        uv: ``[V,2]`` float in [0, 1], v up; faces: ``[F,3]`` int into ``uv``.
        resolution: texture size in texels.
    """
    import torch

    from a3d_mesh.render.ops import rasterize  # late: the render package is heavier than this module

    tc = torch.as_tensor(np.asarray(uv, np.float32))
    clip = torch.cat([tc * 2.0 - 1.0, torch.zeros_like(tc[:, :1]), torch.ones_like(tc[:, :1])], dim=1)
    tri = torch.as_tensor(np.asarray(faces, np.int64))
    rast, _ = rasterize(clip[None], tri, (resolution, resolution), grad_db=False, backend="cpu")
    return float((rast[0, ..., 3] > 0).float().mean())


def texels_per_unit(verts: np.ndarray, faces: np.ndarray, uv: np.ndarray, resolution: int) -> float:
    """Mean texture density: texels per unit length of ``verts`` (pass metres for texels per metre).

    ``resolution * sqrt(UV area / surface area)``, the side in texels of the texture square a
    1 x 1 patch of surface gets, averaged over the whole surface.

    Args:
        verts: ``[V,3]`` float positions; faces: ``[F,3]`` int into ``verts`` and ``uv``;
        uv: ``[V,2]`` float in [0, 1]; resolution: texture size in texels.
    """
    t = uv.astype(np.float64)[faces]  # [F,3,2]
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    uv_area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum()
    return float(resolution * math.sqrt(uv_area / max(surface_area(verts, faces), 1e-30)))


def _child_atlases(verts: np.ndarray, faces: np.ndarray, timeout_s: float, resolution: int, padding: int,
                   chart_settings: tuple[tuple[float, float, float], ...]) -> list[tuple[np.ndarray, ...]]:
    """One xatlas child run over ``chart_settings``: its candidate ``(vmapping, faces, uv)`` atlases.

    Raises:
        RuntimeError: the child crashed, was killed, timed out or wrote no readable result.
    """
    area = surface_area(verts, faces)
    with tempfile.TemporaryDirectory(prefix="a3d-xatlas-") as tmp:
        job, result = Path(tmp) / "job.npz", Path(tmp) / "result.npz"
        np.savez(job, verts=verts.astype(np.float32), faces=faces.astype(np.uint32),
                 resolution=np.int64(resolution), padding=np.int64(padding),
                 charts=np.array([(frac * area, r, d) for frac, r, d in chart_settings], np.float64),
                 brute_force=np.bool_(resolution <= BRUTE_FORCE_MAX_RESOLUTION))
        try:
            proc = subprocess.run(child_command(job, result), capture_output=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            # subprocess.run has already killed and reaped the child.
            raise RuntimeError(f"xatlas timed out after {timeout_s:g} s") from None
        if proc.returncode != 0:
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise RuntimeError(f"xatlas child exited with code {proc.returncode} {tail[0][:200]}".strip())
        try:
            with np.load(result) as r:
                return [(r[f"vmapping_{i}"].astype(np.int64), r[f"faces_{i}"].astype(np.int64),
                         r[f"uv_{i}"].astype(np.float32)) for i in range(int(r["count"]))]
        except (OSError, KeyError, ValueError) as exc:
            raise RuntimeError(f"xatlas child wrote no readable result ({exc})") from None


def xatlas_in_child(
    verts: np.ndarray, faces: np.ndarray, timeout_s: float, resolution: int, padding: int,
    chart_settings: tuple[tuple[float, float, float], ...] = CHART_SETTINGS,
    first: int = FIRST_SETTINGS, target: float = UTILISATION_TARGET,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Run xatlas in a child process; return ``(vmapping int64, faces int64, uv float32,
    utilisation)`` of the atlas covering the most texels (:func:`atlas_utilisation`).

    The first ``first`` of ``chart_settings`` (see :data:`CHART_SETTINGS`; a fraction 0: no cap on
    chart area) are tried in one child; the rest, in a second child, only when the best so far
    fills less than ``target`` of the texels (``target`` 1.0: always). Packing is brute force up
    to :data:`BRUTE_FORCE_MAX_RESOLUTION`. ``timeout_s`` applies to each child.

    Raises:
        RuntimeError: the first child crashed, was killed, timed out or returned malformed output
            (the message says which), or no candidate atlas was valid. A failed second child only
            leaves the first child's atlas.
    """
    best: tuple[float, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
    problem = "xatlas returned no atlas"
    batches = [chart_settings[:first], chart_settings[first:]]
    for n, batch in enumerate(b for b in batches if b):
        if n and best is not None and best[0] >= target:
            break
        try:
            candidates = _child_atlases(verts, faces, timeout_s, resolution, padding, batch)
        except RuntimeError:
            if best is None:
                raise
            break  # the extra settings are a refinement: keep the atlas we have
        for vm, fo, uv in candidates:
            try:
                _check_result(vm, fo, uv, verts.shape[0], faces.shape[0])
            except ValueError as exc:
                problem = str(exc)
                continue
            uv = np.clip(uv, 0.0, 1.0)
            # The texels the bake fills, by the bake's own rasteriser (xatlas' figure is not that).
            used = atlas_utilisation(uv, fo, resolution)
            if best is None or used > best[0]:
                best = (used, (vm, fo, uv))
    if best is None:
        raise RuntimeError(problem)
    return (*best[1], best[0])


def per_triangle_atlas(faces: np.ndarray, resolution: int, padding: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fallback atlas that cannot fail: two triangles per square cell of a regular grid.

    Each face gets its own three UV vertices. In each cell the first face takes the lower-left
    half and the second the upper-right half, both shrunk by ``padding`` texels so bilinear
    lookups and dilation do not mix neighbours.

    Returns: ``(vmapping [3F] int64, faces [F,3] int64, uv [3F,2] float32)``.
    """
    n = faces.shape[0]
    grid = max(1, math.ceil(math.sqrt(math.ceil(n / 2))))
    s = 1.0 / grid
    p = min(padding / resolution, s / 8)  # tiny cells on huge meshes: keep triangles non-empty
    lower = np.array([[p, p], [s - 3 * p, p], [p, s - 3 * p]])
    upper = np.array([[s - p, s - p], [3 * p, s - p], [s - p, 3 * p]])
    idx = np.arange(n)
    cell = idx // 2
    origin = np.stack([(cell % grid) * s, (cell // grid) * s], axis=1)  # [F,2]
    local = np.where((idx % 2 == 0)[:, None, None], lower[None], upper[None])  # [F,3,2]
    uv = (origin[:, None, :] + local).reshape(-1, 2).astype(np.float32)
    return faces.reshape(-1).astype(np.int64), np.arange(3 * n, dtype=np.int64).reshape(n, 3), uv


def unwrap(
    verts: ArrayLike,
    faces: ArrayLike,
    timeout_s: float = 120.0,
    texture_size: int = 1024,
    padding: int | None = None,
    retry_faces: int = 50_000,
    chart_settings: tuple[tuple[float, float, float], ...] = CHART_SETTINGS,
    target: float = UTILISATION_TARGET,
) -> UVResult:
    """UV-unwrap a (cleaned) world-frame mesh; never crashes the calling process.

    Order of attempts: xatlas on the mesh; on crash/timeout/bad output, xatlas on the mesh
    decimated to ``min(retry_faces, F // 2)`` faces; then :func:`per_triangle_atlas` on the input.

    Args:
        verts: ``[V,3]`` float world-frame vertices.
        faces: ``[F,3]`` int faces.
        timeout_s: wall-clock limit per xatlas attempt.
        texture_size: texture resolution the atlas is packed for (sets the gutter in texels).
        padding: gutter between charts in texels; default :func:`default_padding`.
        retry_faces: face budget of the decimated retry.
        chart_settings: the chart settings tried (the best-packed atlas is kept; see CHART_SETTINGS).
        target: utilisation at which the settings after the first ``FIRST_SETTINGS`` are skipped
            (1.0: try them all).
    """
    v, f = validate_mesh(verts, faces)
    v = v.astype(np.float32)
    padding = default_padding(texture_size) if padding is None else padding
    attempts: list[str] = []
    try:
        vm, fo, uv, used = xatlas_in_child(v, f, timeout_s, texture_size, padding, chart_settings, target=target)
        return UVResult(v[vm], fo, uv, vm, v, f, "xatlas", attempts, used)
    except RuntimeError as exc:
        attempts.append(f"xatlas: {exc}")
    n_faces = min(retry_faces, f.shape[0] // 2)
    if n_faces >= 4:
        # A coarser mesh avoids most xatlas crashes and is far faster to chart and pack.
        dv, df = decimate(v, f, n_faces)
        try:
            vm, fo, uv, used = xatlas_in_child(dv, df, timeout_s, texture_size, padding, chart_settings,
                                               target=target)
            return UVResult(dv[vm], fo, uv, vm, dv, df, "xatlas-decimated", attempts, used)
        except RuntimeError as exc:
            attempts.append(f"xatlas-decimated: {exc}")
    vm, fo, uv = per_triangle_atlas(f, texture_size, padding)
    return UVResult(v[vm], fo, uv, vm, v, f, "per-triangle", attempts, atlas_utilisation(uv, fo, texture_size))
