"""Cameras: sampling, OpenGL view/projection matrices and per-pixel rays (one convention).

World frame (docs/conventions.md): right-handed, +Y up; azimuth 0 looks at the object from +Z,
azimuth grows towards +X; elevation is up from the XZ plane. Cameras look at the origin.
Camera space looks down -Z with +Y up; the projection is OpenGL's (clip z in [-w, w]).
Rays are produced for *top-row-first* images, pixel centres at (i + 0.5): they line up with the
rasteriser's output once that is flipped vertically (render.shading does the flip).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class CameraConfig:
    """Ranges cameras are drawn from during training (degrees and world units)."""

    elevation_range: tuple[float, float] = (0.0, 30.0)
    azimuth_range: tuple[float, float] = (-180.0, 180.0)
    fov_range: tuple[float, float] = (40.0, 70.0)
    distance_range: tuple[float, float] = (2.2, 3.0)
    # True: ``distance_range`` is in units of ``1 / tan(fov / 2)``, so a view's distance is
    # ``r / tan(fov / 2)`` and an object at the origin fills the same share of the frame at every
    # fov (its apparent size depends on ``r`` alone). MVDream conditions on the camera's direction
    # only, never its distance or fov, and threestudio draws its cameras this way
    # (``relative_radius``). Off in every preset: on the toy prior a fixed apparent size left the
    # chair's 1.35x overgrowth as it was (benchmarks/RESULTS.md, 2026-12-06).
    relative_distance: bool = False
    views_per_step: int = 4
    # Views of one step are spread evenly around the object (a random start), as in MVDream-style groups.
    spread_views: bool = True
    # 0: the step's views form one spread. N > 0: views_per_step / N groups of N views (a
    # multiple), each group spread evenly around the object from its own random start, with one
    # elevation, distance and field of view per group: the 4-view groups a multi-view prior
    # (MVDream) was trained on.
    view_group: int = 0
    near: float = 0.1
    far: float = 100.0
    # Fixed camera for previews and evaluation.
    eval_elevation: float = 15.0
    eval_fov: float = 40.0
    eval_distance: float = 3.0


@dataclass
class Cameras:
    """A batch of B pinhole cameras.

    mvp [B,4,4] (clip = mvp @ [x, 1]), view [B,4,4] world->camera, position [B,3] world,
    fov_deg [B] vertical field of view, elevation/azimuth [B] in degrees.
    """

    mvp: torch.Tensor
    view: torch.Tensor
    position: torch.Tensor
    fov_deg: torch.Tensor
    elevation: torch.Tensor
    azimuth: torch.Tensor

    def to(self, device: torch.device | str) -> "Cameras":
        return Cameras(*(t.to(device) for t in (self.mvp, self.view, self.position, self.fov_deg,
                                                 self.elevation, self.azimuth)))

    def __len__(self) -> int:
        return self.mvp.shape[0]


def perspective(fov_deg: torch.Tensor, aspect: float = 1.0, near: float = 0.1, far: float = 100.0) -> torch.Tensor:
    """OpenGL perspective matrices [B,4,4] for vertical fields of view ``fov_deg`` [B]."""
    f = 1.0 / torch.tan(torch.deg2rad(fov_deg) / 2)
    p = torch.zeros(fov_deg.shape[0], 4, 4)
    p[:, 0, 0] = f / aspect
    p[:, 1, 1] = f
    p[:, 2, 2] = -(far + near) / (far - near)
    p[:, 2, 3] = -2 * far * near / (far - near)
    p[:, 3, 2] = -1.0
    return p


def look_at(eye: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """World->camera matrices [B,4,4] for cameras at ``eye`` [B,3] looking at ``target`` (origin), +Y up."""
    target = torch.zeros_like(eye) if target is None else target
    fwd = torch.nn.functional.normalize(target - eye, dim=-1)
    up = torch.tensor([0.0, 1.0, 0.0]).expand_as(fwd)
    right = torch.nn.functional.normalize(torch.cross(fwd, up, dim=-1), dim=-1)
    true_up = torch.cross(right, fwd, dim=-1)
    rot = torch.stack([right, true_up, -fwd], dim=1)  # rows: camera axes in world coordinates
    v = torch.eye(4).repeat(eye.shape[0], 1, 1)
    v[:, :3, :3] = rot
    v[:, :3, 3] = -(rot @ eye.unsqueeze(-1)).squeeze(-1)
    return v


def orbit_position(elevation: torch.Tensor, azimuth: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """Camera positions [B,3] on a sphere around the origin (degrees)."""
    el, az = torch.deg2rad(elevation), torch.deg2rad(azimuth)
    return torch.stack([distance * torch.cos(el) * torch.sin(az),
                        distance * torch.sin(el),
                        distance * torch.cos(el) * torch.cos(az)], dim=-1)


def make_cameras(elevation: torch.Tensor, azimuth: torch.Tensor, distance: torch.Tensor,
                 fov_deg: torch.Tensor, near: float = 0.1, far: float = 100.0) -> Cameras:
    """Cameras from [B] tensors of elevation, azimuth (degrees), distance and vertical fov."""
    pos = orbit_position(elevation, azimuth, distance)
    view = look_at(pos)
    mvp = perspective(fov_deg, 1.0, near, far) @ view
    return Cameras(mvp, view, pos, fov_deg, elevation, azimuth)


def _uniform(lo_hi: tuple[float, float], n: int, g: torch.Generator) -> torch.Tensor:
    lo, hi = lo_hi
    return lo + (hi - lo) * torch.rand(n, generator=g)


def sample_cameras(cfg: CameraConfig, generator: torch.Generator, n: int | None = None) -> Cameras:
    """Draw ``n`` (default ``cfg.views_per_step``) training cameras using only ``generator``."""
    n = n or cfg.views_per_step
    if cfg.view_group > 0:
        return _sample_groups(cfg, generator, n)
    el = _uniform(cfg.elevation_range, n, generator)
    if cfg.spread_views:
        start = _uniform(cfg.azimuth_range, 1, generator)
        az = start + torch.arange(n) * (360.0 / n)
        az = (az + 180.0) % 360.0 - 180.0
    else:
        az = _uniform(cfg.azimuth_range, n, generator)
    dist = _uniform(cfg.distance_range, n, generator)
    fov = _uniform(cfg.fov_range, n, generator)
    return make_cameras(el, az, _distance(cfg, dist, fov), fov, cfg.near, cfg.far)


def _distance(cfg: CameraConfig, drawn: torch.Tensor, fov_deg: torch.Tensor) -> torch.Tensor:
    """Camera distances [B] from values ``drawn`` [B] from ``distance_range`` (see ``relative_distance``)."""
    return drawn / torch.tan(torch.deg2rad(fov_deg) / 2) if cfg.relative_distance else drawn


def _sample_groups(cfg: CameraConfig, generator: torch.Generator, n: int) -> Cameras:
    """``n`` cameras in consecutive groups of ``cfg.view_group``: per group one elevation,
    distance and fov, azimuths ``start + i * 360 / view_group`` (wrapped to [-180, 180))."""
    size = cfg.view_group
    if n % size:
        raise ValueError(f"{n} views do not split into groups of {size}")
    groups = n // size
    el = _uniform(cfg.elevation_range, groups, generator).repeat_interleave(size)
    start = _uniform(cfg.azimuth_range, groups, generator).repeat_interleave(size)
    az = start + torch.arange(size).repeat(groups) * (360.0 / size)
    az = (az + 180.0) % 360.0 - 180.0
    dist = _uniform(cfg.distance_range, groups, generator).repeat_interleave(size)
    fov = _uniform(cfg.fov_range, groups, generator).repeat_interleave(size)
    return make_cameras(el, az, _distance(cfg, dist, fov), fov, cfg.near, cfg.far)


def orbit_cameras(cfg: CameraConfig, n: int, elevation: float | None = None, start_azimuth: float = 0.0) -> Cameras:
    """``n`` evenly spaced preview cameras around the object at the evaluation settings."""
    az = start_azimuth + torch.arange(n, dtype=torch.float32) * (360.0 / n)
    el = torch.full((n,), cfg.eval_elevation if elevation is None else elevation)
    return make_cameras(el, az, torch.full((n,), cfg.eval_distance), torch.full((n,), cfg.eval_fov),
                        cfg.near, cfg.far)


def pixel_rays(cams: Cameras, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space ray origins and unit directions [B,H,W,3] for top-row-first images.

    Pixel (row r, col c) has NDC x = (c + 0.5) / W * 2 - 1 and y = 1 - (r + 0.5) / H * 2, i.e. the
    same pixel centres as the rasteriser after its vertical flip.
    """
    dev = cams.mvp.device
    x = (torch.arange(width, device=dev, dtype=torch.float32) + 0.5) / width * 2 - 1
    y = 1 - (torch.arange(height, device=dev, dtype=torch.float32) + 0.5) / height * 2
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    tan_half = torch.tan(torch.deg2rad(cams.fov_deg) / 2).view(-1, 1, 1)
    d_cam = torch.stack([xx.expand(len(cams), -1, -1) * tan_half,  # aspect 1
                         yy.expand(len(cams), -1, -1) * tan_half,
                         -torch.ones(len(cams), height, width, device=dev)], dim=-1)
    rot_c2w = cams.view[:, :3, :3].transpose(1, 2)  # inverse of a rotation
    d = torch.einsum("bij,bhwj->bhwi", rot_c2w, d_cam)
    d = torch.nn.functional.normalize(d, dim=-1)
    o = cams.position.view(-1, 1, 1, 3).expand_as(d)
    return o, d


def fov_to_focal(fov_deg: float, size: int) -> float:
    """Focal length in pixels for a vertical field of view and image size."""
    return size / 2 / math.tan(math.radians(fov_deg) / 2)
