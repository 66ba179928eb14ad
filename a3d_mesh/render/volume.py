"""Volume rendering of a density/albedo field with occupancy skipping (the coarse NeRF stage).

Rays are world-space ``(o [R,3], d [R,3])`` (unit d). Samples are stratified between the ray's
entry and exit of the scene cube ``[-bound, bound]^3``; samples in cells that the occupancy grid
marks empty are never sent to the field, which keeps 64 px renders cheap on a CPU. The grid holds
the *maximum over all objects of the set* of an EMA of density, so it never hides one object's
geometry because another object is empty there.

Normals are ``-grad(sigma)/|grad(sigma)|`` from a 4-point tetrahedral finite difference (exact for
linear fields), which needs no double backward through the hash grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

DensityFn = Callable[[torch.Tensor], torch.Tensor]  # points [N,3] world -> sigma [N]
FieldFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # points -> (sigma [N], albedo [N,3])

# Tetrahedron directions v_k with sum v_k = 0 and sum v_k v_k^T = 4 I (finite-difference gradient).
# Samples whose compositing weight is below this get no normal (their shading is invisible).
NORMAL_WEIGHT_MIN = 1e-4

_TETRA = torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, 1.0, 1.0]])


class OccupancyGrid(torch.nn.Module):
    """A [R,R,R] grid over ``[-bound, bound]^3`` of which cells may hold density.

    ``density_ema`` keeps a running maximum-decayed estimate; it is a buffer so checkpoints
    (and therefore ``--resume``) restore it exactly.
    """

    def __init__(self, resolution: int, bound: float, threshold: float) -> None:
        super().__init__()
        self.resolution, self.bound, self.threshold = resolution, bound, threshold
        self.register_buffer("density_ema", torch.full((resolution,) * 3, 1e3))  # all occupied at start
        self.register_buffer("occupied", torch.ones((resolution,) * 3, dtype=torch.bool))

    def cell_of(self, pts: torch.Tensor) -> torch.Tensor:
        """Integer cell indices [N,3] of world points [N,3] (clamped to the grid)."""
        r = self.resolution
        idx = ((pts + self.bound) / (2 * self.bound) * r).floor().long()
        return idx.clamp(0, r - 1)

    def query(self, pts: torch.Tensor) -> torch.Tensor:
        """Boolean [N]: the point's cell may be occupied."""
        i = self.cell_of(pts)
        return self.occupied[i[:, 0], i[:, 1], i[:, 2]]

    @torch.no_grad()
    def update(self, density_fns: list[DensityFn], step_size: float, generator: torch.Generator,
               decay: float = 0.95) -> float:
        """Re-evaluate every cell at a jittered point for each object; returns the occupied fraction."""
        r, dev = self.resolution, self.density_ema.device
        ii = torch.stack(torch.meshgrid(*(torch.arange(r),) * 3, indexing="ij"), -1).reshape(-1, 3)
        jitter = torch.rand(ii.shape, generator=generator)
        pts = ((ii + jitter) / r * 2 - 1) * self.bound
        pts = pts.to(dev)
        dens = torch.zeros(pts.shape[0], device=dev)
        for fn in density_fns:
            for chunk in range(0, pts.shape[0], 1 << 16):
                d = fn(pts[chunk:chunk + (1 << 16)]).float()
                dens[chunk:chunk + (1 << 16)] = torch.maximum(dens[chunk:chunk + (1 << 16)], d)
        self.density_ema.copy_(torch.maximum(self.density_ema * decay, dens.view(r, r, r)))
        # Threshold on opacity of one step so the test does not depend on the ray-step size.
        alpha = 1 - torch.exp(-self.density_ema * step_size)
        occ = alpha > self.threshold
        # Dilate by one cell so surfaces between cell centres are never cut off.
        occ = F.max_pool3d(occ[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0
        self.occupied.copy_(occ)
        return float(occ.float().mean())


def ray_box(o: torch.Tensor, d: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances [R] of rays with the cube [-bound, bound]^3 (far <= near: miss)."""
    inv = 1.0 / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    t0, t1 = (-bound - o) * inv, (bound - o) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, far


def fd_normals(density: DensityFn, pts: torch.Tensor, eps: float) -> torch.Tensor:
    """Unit normals [N,3] = -grad(sigma)/|grad(sigma)| by a tetrahedral finite difference."""
    if pts.shape[0] == 0:
        return pts.new_zeros(0, 3)
    v = _TETRA.to(pts)
    probe = (pts[:, None, :] + eps * v[None]).reshape(-1, 3)
    s = density(probe).view(-1, 4, 1)
    grad = (s * v[None]).sum(1) / (4 * eps)
    return F.normalize(-grad, dim=-1, eps=1e-12)


@dataclass
class VolumeOutput:
    """Per-ray results: albedo/shaded colour [R,3], opacity [R], depth [R], normal [R,3], orientation [R]."""

    albedo: torch.Tensor
    shaded: torch.Tensor
    opacity: torch.Tensor
    depth: torch.Tensor
    normal: torch.Tensor
    orientation: torch.Tensor


def render_rays(field: FieldFn, density: DensityFn, o: torch.Tensor, d: torch.Tensor, n_samples: int,
                bound: float, occupancy: OccupancyGrid | None = None, light_dir: torch.Tensor | None = None,
                ambient: float = 0.3, generator: torch.Generator | None = None, normals: bool = True,
                normal_eps: float | None = None) -> VolumeOutput:
    """Composite a field along rays ``o, d`` [R,3].

    ``light_dir`` [3] (unit, towards the light) enables Lambertian shading of the albedo:
    ``albedo * (ambient + (1 - ambient) * max(0, n . l))``. The orientation term per ray is
    ``sum_i w_i max(0, n_i . d)^2`` (normals must not face away from the camera).
    ``generator`` jitters the samples (training); None gives mid-point samples (previews).
    """
    r, dev = o.shape[0], o.device
    near, far = ray_box(o, d, bound)
    hit = far > near
    near = torch.where(hit, near, torch.zeros_like(near))
    far = torch.where(hit, far, torch.zeros_like(far))
    steps = torch.arange(n_samples, device=dev, dtype=torch.float32)
    if generator is not None:
        steps = steps + torch.rand(r, n_samples, generator=generator).to(dev)
    else:
        steps = steps + 0.5
    delta = (far - near) / n_samples  # [R]
    t = near[:, None] + steps * delta[:, None]  # [R,S]
    pts = o[:, None, :] + t[..., None] * d[:, None, :]  # [R,S,3]
    flat = pts.reshape(-1, 3)
    keep = hit[:, None].expand(-1, n_samples).reshape(-1)
    if occupancy is not None:
        keep = keep & occupancy.query(flat)
    idx = keep.nonzero().squeeze(-1)
    sigma = torch.zeros(flat.shape[0], device=dev)
    albedo = torch.zeros(flat.shape[0], 3, device=dev)
    if idx.numel():
        s, a = field(flat[idx])
        sigma = sigma.index_put((idx,), s.float())
        albedo = albedo.index_put((idx,), a.float())
    sigma, albedo = sigma.view(r, n_samples), albedo.view(r, n_samples, 3)
    alpha = 1 - torch.exp(-sigma * delta[:, None])
    trans = torch.cumprod(torch.cat([torch.ones(r, 1, device=dev), 1 - alpha + 1e-10], 1), 1)[:, :-1]
    w = alpha * trans  # [R,S]
    normal = torch.zeros(r * n_samples, 3, device=dev)
    if normals:
        # Normals cost four density probes each: only samples that contribute to the image need them.
        nidx = (w.detach().reshape(-1) > NORMAL_WEIGHT_MIN).nonzero().squeeze(-1)
        if nidx.numel():
            eps = normal_eps if normal_eps is not None else 2 * bound / 512
            normal = normal.index_put((nidx,), fd_normals(density, flat[nidx], eps))
    normal = normal.view(r, n_samples, 3)
    opacity = w.sum(1)
    depth = (w * t).sum(1)
    out_albedo = (w[..., None] * albedo).sum(1)
    out_normal = (w[..., None] * normal).sum(1)
    orient = (w * (normal * d[:, None, :]).sum(-1).clamp_min(0) ** 2).sum(1)
    if light_dir is not None and normals:
        lam = (normal * light_dir.to(dev)).sum(-1).clamp_min(0)
        shade = ambient + (1 - ambient) * lam
        shaded = (w[..., None] * albedo * shade[..., None]).sum(1)
    else:
        shaded = out_albedo
    return VolumeOutput(out_albedo, shaded, opacity, depth, out_normal, orient)
