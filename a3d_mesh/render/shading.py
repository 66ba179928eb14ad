"""Shaded mesh renders built from the raster ops, and the shared background.

``render_mesh`` composes rasterize -> interpolate -> colour field -> Lambertian shading ->
background -> antialias, then flips the raster (row 0 = clip y = -1) to *top row first*, so its
images line up pixel for pixel with ``cameras.pixel_rays`` and the volume renderer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from a3d_mesh.cameras import Cameras
from a3d_mesh.geometry.regularizers import vertex_normals
from a3d_mesh.render.ops import antialias, interpolate, rasterize

ColorFn = Callable[[torch.Tensor], torch.Tensor]  # world points [N,3] -> rgb [N,3] in [0,1]


class Background(torch.nn.Module):
    """A small MLP of the view direction, shared by every object of the set (never sees u).

    forward(dirs [...,3] unit world directions) -> rgb [...,3] in [0,1].
    """

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 3))

    def forward(self, dirs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(dirs))


def to_clip(verts: torch.Tensor, mvp: torch.Tensor) -> torch.Tensor:
    """World vertices [V,3] -> clip positions [B,V,4] for mvp [B,4,4]."""
    vh = F.pad(verts, (0, 1), value=1.0)
    return torch.einsum("bij,vj->bvi", mvp.to(verts), vh)


@dataclass
class MeshRender:
    """Top-row-first images: rgb [B,H,W,3], mask [B,H,W,1] (antialiased coverage, differentiable at
    silhouettes), normal [B,H,W,3] (world, 0 off-mesh),
    depth [B,H,W,1] (camera distance along the ray axis, 0 off-mesh)."""

    rgb: torch.Tensor
    mask: torch.Tensor
    normal: torch.Tensor
    depth: torch.Tensor


def render_mesh(verts: torch.Tensor, faces: torch.Tensor, cams: Cameras, resolution: int,
                color_fn: ColorFn | None = None, light_dir: torch.Tensor | None = None, ambient: float = 0.3,
                background: torch.Tensor | float = 1.0, backend: str = "auto") -> MeshRender:
    """Render a world-frame mesh (verts [V,3], faces [F,3]) from ``cams`` at ``resolution``^2.

    ``color_fn`` gives albedo at visible surface points (white when None); ``light_dir`` [B,3] or
    [3] unit vectors towards the light enable Lambertian shading; ``background`` is a scalar grey
    or a [B,H,W,3] top-row-first image. Gradients flow to verts (through barycentrics and
    antialias) and to whatever ``color_fn`` closes over.
    """
    b, h = len(cams), resolution
    cams = cams.to(verts.device)
    clip = to_clip(verts, cams.mvp)
    tri = faces.to(torch.int32)
    rast, _ = rasterize(clip, tri, (h, h), backend=backend)
    mask = (rast[..., 3:] > 0).float()
    vn = vertex_normals(verts, faces)
    attrs = torch.cat([verts, vn], -1)
    interp, _ = interpolate(attrs, rast, tri)
    pos, nrm = interp[..., :3], F.normalize(interp[..., 3:], dim=-1, eps=1e-12)
    sel = mask[..., 0] > 0
    albedo = torch.ones(b, h, h, 3, device=verts.device)
    if color_fn is not None and bool(sel.any()):
        albedo = albedo.index_put((sel,), color_fn(pos[sel]).float())
    if light_dir is not None:
        ld = light_dir.to(verts).view(-1, 1, 1, 3)
        lam = (nrm * ld).sum(-1, keepdim=True).clamp_min(0)
        color = albedo * (ambient + (1 - ambient) * lam)
    else:
        color = albedo
    if isinstance(background, torch.Tensor):
        bg = background.flip(1)  # to raster orientation for compositing before antialias
    else:
        bg = torch.full_like(color, float(background))
    color = color * mask + bg * (1 - mask)
    # Coverage is antialiased with the colour so silhouettes (mask losses) get vertex gradients.
    rgba = antialias(torch.cat([color, mask], -1).contiguous(), rast, clip, tri)
    color, coverage = rgba[..., :3], rgba[..., 3:]
    cam_z = torch.einsum("bij,bhwj->bhwi", cams.view[:, :3, :3].to(pos), pos) + cams.view[:, None, None, :3, 3].to(pos)
    depth = (-cam_z[..., 2:3]) * mask
    return MeshRender(color.flip(1), coverage.flip(1), (nrm * mask).flip(1), depth.flip(1))


def random_light(cams: Cameras, generator: torch.Generator, spread_deg: float = 45.0) -> torch.Tensor:
    """A unit light direction [B,3] per camera, near the camera's side (so the visible side is lit)."""
    base = F.normalize(cams.position, dim=-1)
    jitter = torch.randn(base.shape, generator=generator) * torch.tan(torch.deg2rad(torch.tensor(spread_deg)))
    return F.normalize(base + jitter.to(base), dim=-1)
