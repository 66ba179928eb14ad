"""What a training step's renders are scored against: a diffusion prior or known target meshes.

Both stages hand a :class:`StepRender` to a *guide* and get back a scalar loss plus log values.
``SDSGuide`` wraps :class:`a3d_mesh.guidance.SDSGuidance` (score distillation at the step's code
u, against tau(u)); ``ImageTargetGuide`` is the supported ``guidance: images`` option: a
multi-view image loss against renders of one known mesh per object, applied at the corners of the
simplex (interior codes get no image loss: they are what the shared, low-capacity model makes of
the corners). It is what the known-targets tests and the editing use build on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from a3d_mesh.cameras import Cameras
from a3d_mesh.prompts import PromptSet
from a3d_mesh.render.shading import MeshRender, render_mesh
from a3d_mesh.simplex import CodeSample

if TYPE_CHECKING:  # the guidance package is only needed for the type here
    from a3d_mesh.guidance import SDSGuidance


@dataclass
class StepRender:
    """One step's renders (top-row-first): rgb [B,H,W,3], mask [B,H,W,1] (opacity), the background
    they were composited on [B,H,W,3], and how they were made. The mesh stage also gives world
    normals [B,H,W,3] and camera depth [B,H,W,1] (0 off the surface)."""

    rgb: torch.Tensor
    mask: torch.Tensor
    background: torch.Tensor
    code: CodeSample
    cams: Cameras
    light: torch.Tensor | None
    progress: float
    normal: torch.Tensor | None = None
    depth: torch.Tensor | None = None


class Guide(Protocol):
    def flat_background(self, code: CodeSample) -> bool:
        """True when this step's renders must use a flat random background, not the learned one."""
        ...

    def __call__(self, r: StepRender, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]: ...


class SDSGuide:
    """Score distillation from a diffusers prior (see :mod:`a3d_mesh.guidance`); with view-dependent
    prompting each render is scored against its own camera's view prompt."""

    def __init__(self, sds: "SDSGuidance") -> None:
        self.sds = sds

    def flat_background(self, code: CodeSample) -> bool:
        return False

    def __call__(self, r: StepRender, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        views = self.sds.camera_views(r.cams.elevation, r.cams.azimuth)
        out = self.sds(r.rgb, r.code.u.to(r.rgb.device), r.progress, generator=generator, views=views)
        return out.loss, {"sds": float(out.loss.detach()), "grad": float(out.grad_norm)}


# Distinct flat albedos for target meshes without colours of their own.
_PALETTE = [(0.85, 0.35, 0.25), (0.25, 0.55, 0.85), (0.35, 0.75, 0.35), (0.85, 0.75, 0.25),
            (0.65, 0.35, 0.75), (0.25, 0.75, 0.75)]


COLOR_SAMPLES = 100_000  # surface samples of a coloured mesh: ~300^2 texels, finer than any training render


class SurfaceColors:
    """The albedo of a mesh's surface as a colour field: world points [N,3] -> rgb [N,3] in [0,1].

    Stored as dense surface samples (points [S,3], colours [S,3], float32, in the mesh's frame) and
    looked up by inverse-distance weighting of the 4 nearest samples. Meant for points *on* the
    surface (render_mesh's visible points of that very mesh), where the nearest samples are within
    about the sample spacing, so texture detail down to that spacing survives. Why samples and not
    per-vertex colours: a coarse textured mesh has few vertices and all its detail in the texture.
    """

    def __init__(self, points: np.ndarray, colors: np.ndarray) -> None:
        from scipy.spatial import cKDTree  # scipy comes with trimesh; only coloured meshes need it

        self.points = np.asarray(points, dtype=np.float32)
        self.colors = np.clip(np.asarray(colors, dtype=np.float32), 0.0, 1.0)
        self._tree = cKDTree(self.points)

    def __call__(self, p: torch.Tensor) -> torch.Tensor:
        q = p.detach().cpu().numpy().astype(np.float32)
        k = min(4, len(self.points))
        d, idx = self._tree.query(q, k=k)
        d, idx = d.reshape(len(q), k), idx.reshape(len(q), k)
        w = 1.0 / np.maximum(d, 1e-6)
        rgb = (self.colors[idx] * w[..., None]).sum(1) / w.sum(1, keepdims=True)
        return torch.from_numpy(rgb.astype(np.float32)).to(p.device)

    def transformed(self, centre: np.ndarray, scale: float) -> "SurfaceColors":
        """The same colours with points mapped by ``(x - centre) * scale`` (e.g. into the set's frame)."""
        return SurfaceColors((self.points - centre) * scale, self.colors)


def _rgb01(c: object) -> np.ndarray:
    """An RGB(A) colour as uint8 0..255 or float 0..1 -> rgb [3] float64 in [0, 1]."""
    a = np.asarray(c)
    return a[:3] / 255.0 if a.dtype.kind in "ui" else a[:3].astype(np.float64)


def _part_colors(m: object, n: int, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``n`` surface samples of one trimesh part with their rgb [n,3] in [0,1], or None if the part
    has no colour: texture (at the sample's interpolated UV, times the base colour factor), vertex
    colours (interpolated), face colours, or a flat material colour."""
    import trimesh
    from trimesh.visual.color import uv_to_interpolated_color

    vis = m.visual  # type: ignore[attr-defined]
    pts, fidx, bary = trimesh.sample.sample_surface(m, n, seed=seed, return_barycentric=True)
    faces = np.asarray(m.faces)[fidx]  # type: ignore[attr-defined]
    if isinstance(vis, trimesh.visual.TextureVisuals):
        mat = vis.material
        pbr = hasattr(mat, "baseColorTexture")  # glTF; else an OBJ/MTL SimpleMaterial
        image = mat.baseColorTexture if pbr else getattr(mat, "image", None)
        factor = mat.baseColorFactor if pbr else getattr(mat, "diffuse", None)
        if vis.uv is None or not len(vis.uv):
            image = None  # a texture without UVs cannot be placed
        if image is None and factor is None:
            return None  # a bare default material: no colour of its own
        f3 = np.ones(3) if factor is None else _rgb01(factor)
        if image is not None:
            uv = (np.asarray(vis.uv)[faces] * bary[..., None]).sum(1)
            tex = uv_to_interpolated_color(uv, image)[:, :3] / 255.0
            # glTF multiplies the texture by the factor; MTL's map_Kd replaces Kd (as most renderers do).
            rgb = tex * f3 if pbr else tex
        else:
            rgb = np.broadcast_to(f3, (n, 3))
    elif vis.kind == "vertex":
        rgb = (np.asarray(vis.vertex_colors, dtype=np.float64)[faces, :3] * bary[..., None]).sum(1) / 255.0
    elif vis.kind == "face":
        rgb = np.asarray(vis.face_colors, dtype=np.float64)[fidx, :3] / 255.0
    else:
        return None
    return np.asarray(pts, dtype=np.float32), np.asarray(rgb, dtype=np.float32)


def load_colored_mesh(path: str | Path, samples: int = COLOR_SAMPLES) -> tuple[torch.Tensor, torch.Tensor, SurfaceColors | None]:
    """Read a mesh file (OBJ, PLY, GLB/GLTF, STL) as (verts [V,3] float32, faces [F,3] int64, colours).

    Multi-part scenes are concatenated in their world placement. ``colours`` is a
    :class:`SurfaceColors` (in the file's frame) when any part carries colour (texture + UVs,
    vertex or face colours, a material colour), else None; uncoloured parts of a partly coloured
    scene get no samples, so their points take the nearest coloured part's colour. Raises
    ValueError (one line) for unreadable files, no triangles, non-finite coordinates.
    """
    import trimesh

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"mesh file not found: {p}")
    try:
        loaded = trimesh.load(p, force="scene", process=False)
        parts = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh) and len(g.faces)]
    except Exception as e:  # trimesh raises many types for unreadable files
        raise ValueError(f"cannot read mesh {p}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not parts:
        raise ValueError(f"mesh {p} has no triangles")
    offsets = np.cumsum([0] + [len(g.vertices) for g in parts])
    v = np.concatenate([np.asarray(g.vertices, dtype=np.float32) for g in parts])
    f = np.concatenate([np.asarray(g.faces, dtype=np.int64) + o for g, o in zip(parts, offsets)])
    if not np.isfinite(v).all():
        raise ValueError(f"mesh {p} has non-finite vertex coordinates")
    if samples <= 0:
        return torch.from_numpy(v), torch.from_numpy(f), None
    area = np.array([g.area for g in parts])
    counts = np.maximum(1, np.round(samples * area / max(area.sum(), 1e-30))).astype(int)  # even density
    sampled = [c for i, (g, n) in enumerate(zip(parts, counts)) if (c := _part_colors(g, int(n), seed=i)) is not None]
    colors = SurfaceColors(np.concatenate([c[0] for c in sampled]), np.concatenate([c[1] for c in sampled])) if sampled else None
    return torch.from_numpy(v), torch.from_numpy(f), colors


def load_mesh(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`load_colored_mesh` without the colours: (verts [V,3] float32, faces [F,3] int64)."""
    v, f, _ = load_colored_mesh(path, samples=0)
    return v, f


class ImageTargetGuide:
    """``guidance: images``: match renders of known meshes (one per object) at the set's corners.

    Loss at a corner code: ``mse(rgb) + w_mask mse(mask)`` and, where the render has them (mesh
    stage), ``w_normal mse(normal) + w_depth l1(depth)`` over pixels both renders cover; targets
    are rendered from the same cameras, light and flat background, so silhouettes get gradients
    through antialiasing (mesh stage) or opacity (NeRF stage).
    """

    def __init__(self, meshes: list[tuple[torch.Tensor, torch.Tensor]], mask_weight: float = 1.0,
                 normal_weight: float = 0.0, depth_weight: float = 0.0,
                 colors: list[tuple[float, float, float] | SurfaceColors] | None = None) -> None:
        """colors: per mesh, a flat albedo or the mesh's own :class:`SurfaceColors` (same frame as
        its verts); default: distinct flat colours."""
        self.meshes = meshes
        self.mask_weight, self.normal_weight, self.depth_weight = mask_weight, normal_weight, depth_weight
        self.colors = colors or [_PALETTE[k % len(_PALETTE)] for k in range(len(meshes))]

    @classmethod
    def from_files(cls, paths: list[str], prompts: PromptSet, mask_weight: float = 1.0, normal_weight: float = 0.0,
                   depth_weight: float = 0.0) -> "ImageTargetGuide":
        if len(paths) != len(prompts):
            raise ValueError(f"guidance.targets lists {len(paths)} meshes for {len(prompts)} prompts; give one per prompt")
        return cls([load_mesh(p) for p in paths], mask_weight, normal_weight, depth_weight)

    def flat_background(self, code: CodeSample) -> bool:
        return True

    def target(self, k: int, cams: Cameras, resolution: int, light: torch.Tensor | None,
               background: torch.Tensor) -> MeshRender:
        """Target renders (rgb, mask, normal, depth) of object k."""
        v, f = self.meshes[k]
        dev = background.device
        c = self.colors[k]
        if isinstance(c, SurfaceColors):
            color_fn = c
        else:
            col = torch.tensor(c, device=dev)
            color_fn = lambda p: col.expand(p.shape[0], 3)  # noqa: E731
        with torch.no_grad():
            return render_mesh(v.to(dev), f.to(dev), cams, resolution, color_fn=color_fn, light_dir=light,
                               background=background)

    def __call__(self, r: StepRender, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        code = r.code
        if code.a not in (0.0, 1.0):
            return r.rgb.sum() * 0.0, {"img": 0.0}
        k = code.i if code.a == 1.0 else code.j
        t = self.target(k, r.cams, r.rgb.shape[1], r.light, r.background)
        loss = F.mse_loss(r.rgb, t.rgb) + self.mask_weight * F.mse_loss(r.mask, t.mask)
        # Normals and depth are compared only where both renders cover the pixel: across a
        # silhouette mismatch they jump (depth 0 vs ~distance) and the mask term handles that.
        both = ((r.mask.detach() > 0.5) & (t.mask > 0.5)).float()
        n_both = both.sum().clamp_min(1.0)
        if r.normal is not None and self.normal_weight > 0:
            loss = loss + self.normal_weight * (((r.normal - t.normal) ** 2) * both).sum() / (3 * n_both)
        if r.depth is not None and self.depth_weight > 0:
            # L1, not squared: a flat face a few hundredths off gets the same pull as a large
            # error, where a squared error's gradient fades just when only depth can place it.
            loss = loss + self.depth_weight * ((r.depth - t.depth).abs() * both).sum() / n_both
        return loss, {"img": float(loss.detach())}
