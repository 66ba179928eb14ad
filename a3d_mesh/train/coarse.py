"""Stage 1: the latent-conditioned NeRF, volume rendered at low resolution, trained over simplex edges.

Per step: one code (a pair and a) for the whole batch, ``camera.views_per_step`` cameras, one
light per view; the renders go to the guide (SDS at tau(u), or target images), plus the
orientation regulariser (weight ramped as data in the preset) and an optional opacity term.
"""

from __future__ import annotations

from typing import Any

import torch

from a3d_mesh.cameras import Cameras, pixel_rays, sample_cameras
from a3d_mesh.config import RunConfig
from a3d_mesh.fields import NeRFField
from a3d_mesh.render.shading import Background, random_light
from a3d_mesh.render.volume import OccupancyGrid, VolumeOutput, render_rays
from a3d_mesh.run.trained import color_field
from a3d_mesh.simplex import corner, sample_code
from a3d_mesh.train.guide import Guide, StepRender


def split_param_groups(modules: dict[str, torch.nn.Module], lr_grid: float, lr_mlp: float) -> list[dict[str, Any]]:
    """Hash-grid tables get ``lr_grid``, every other parameter ``lr_mlp`` (method note, section 5)."""
    grid, rest = [], []
    for mod in modules.values():
        for name, p in mod.named_parameters():
            (grid if "grid" in name.split(".")[0] or ".grid." in f".{name}" else rest).append(p)
    groups = [{"params": grid, "lr": lr_grid, "name": "grid"}, {"params": rest, "lr": lr_mlp, "name": "mlp"}]
    return [g for g in groups if g["params"]]


def min_opacity_loss(opacity: torch.Tensor, floor: float) -> torch.Tensor:
    """Hinge keeping every view non-empty: ``mean_v relu(floor - mean_pixels(opacity_v))``.

    Args:
        opacity: [B, H, W, 1] (or [B, ...]) per-pixel opacity in [0, 1] of B views.
        floor: the least mean opacity a view may have without cost.

    Returns:
        Scalar: 0 (and zero gradient) when every view covers ``floor`` on average; otherwise the
        mean shortfall over the views, whose gradient raises the density of the empty views only.
    """
    per_view = opacity.reshape(opacity.shape[0], -1).mean(dim=1)
    return torch.relu(floor - per_view).mean()


def add_min_opacity(loss: torch.Tensor, logs: dict[str, float], opacity: torch.Tensor, floor: float,
                    weight: float) -> torch.Tensor:
    """``loss + weight * min_opacity_loss(opacity, floor)`` (the floor of either stage; ``opacity``
    is the NeRF's or the mesh's coverage), logged as ``floor``; ``loss`` itself when ``weight`` is 0."""
    if weight <= 0:
        return loss
    hinge = min_opacity_loss(opacity, floor)
    logs["floor"] = float(hinge.detach())
    return loss + weight * hinge


def render_nerf(field: NeRFField, u: torch.Tensor, cams: Cameras, resolution: int, n_samples: int, bound: float,
                occupancy: OccupancyGrid | None, light: torch.Tensor | None, generator: torch.Generator | None,
                normals: bool = True) -> tuple[VolumeOutput, torch.Tensor]:
    """Volume render ``field`` at code ``u`` [K]; returns per-ray outputs ([B*H*W] leading dim) and ray dirs [B,H,W,3].

    With ``light`` [B,3] each view is shaded by its own light.
    """
    dev = u.device
    o, d = pixel_rays(cams.to(dev), resolution, resolution)
    b = len(cams)
    outs = []
    for v in range(b):  # per view: each has its own light
        lv = light[v] if light is not None else None
        outs.append(render_rays(lambda p: field(p, u), lambda p: field.density(p, u), o[v].reshape(-1, 3),
                                d[v].reshape(-1, 3), n_samples, bound, occupancy, lv, generator=generator,
                                normals=normals))
    cat = VolumeOutput(*(torch.cat([getattr(x, f) for x in outs], 0) for f in VolumeOutput.__dataclass_fields__))
    return cat, d


class CoarseStage:
    """The NeRF stage as a :class:`a3d_mesh.train.loop.Stage`."""

    name = "coarse"

    def __init__(self, cfg: RunConfig, n_objects: int, guide: Guide, device: torch.device) -> None:
        c = cfg.coarse
        self.cfg, self.n, self.guide, self.device = cfg, n_objects, guide, device
        self.total_steps = c.steps
        self.field = color_field(cfg, n_objects).to(device)
        self.background = Background().to(device)
        self.occupancy = OccupancyGrid(c.occupancy_resolution, cfg.bound, c.occupancy_threshold).to(device)
        self.opt = torch.optim.AdamW(split_param_groups({"field": self.field, "background": self.background},
                                                        c.lr_grid, c.lr_mlp), betas=(0.9, 0.99), eps=1e-15,
                                     weight_decay=0.0)
        self.generator = torch.Generator().manual_seed(cfg.seed)

    def step_size(self) -> float:
        return 2 * self.cfg.bound * 3 ** 0.5 / self.cfg.coarse.samples_per_ray

    def step(self, i: int) -> dict[str, float]:
        c, g = self.cfg.coarse, self.generator
        if i % c.occupancy_every == 0:
            with torch.no_grad():
                fns = [lambda p, k=k: self.field.density(p, corner(k, self.n, self.device)) for k in range(self.n)]
                self.occupancy.update(fns, self.step_size(), g)
        code = sample_code(self.n, self.cfg.sampling, g)
        u = code.u.to(self.device)
        cams = sample_cameras(self.cfg.camera, g)
        light = random_light(cams, g)
        albedo_only = float(torch.rand((), generator=g)) < c.albedo_only_prob
        flat_bg = torch.rand(3, generator=g)
        res = c.resolution
        out, dirs = render_nerf(self.field, u, cams, res, c.samples_per_ray, self.cfg.bound, self.occupancy,
                                None if albedo_only else light, g)
        b = len(cams)
        color = (out.albedo if albedo_only else out.shaded).view(b, res, res, 3)
        opacity = out.opacity.view(b, res, res, 1)
        if self.guide.flat_background(code):
            bg = flat_bg.to(self.device).expand(b, res, res, 3)
        else:
            bg = self.background(dirs)
        rgb = color + (1 - opacity) * bg
        progress = i / max(self.total_steps, 1)
        loss_g, logs = self.guide(StepRender(rgb, opacity, bg, code, cams, None if albedo_only else light, progress), g)
        w_orient = c.orientation_weight(progress)
        orient = out.orientation.mean()
        loss = loss_g + w_orient * orient
        loss = add_min_opacity(loss, logs, opacity, c.min_opacity, c.min_opacity_weight)
        if c.opacity_weight > 0:
            loss = loss + c.opacity_weight * out.opacity.clamp(1e-4, 1 - 1e-4).sqrt().mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        logs.update({"loss": float(loss.detach()), "orient": float(orient.detach())})
        return logs

    def state_dict(self) -> dict[str, Any]:
        return {"field": self.field.state_dict(), "background": self.background.state_dict(),
                "occupancy": self.occupancy.state_dict(), "opt": self.opt.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.field.load_state_dict(state["field"])
        self.background.load_state_dict(state["background"])
        self.occupancy.load_state_dict(state["occupancy"])
        self.opt.load_state_dict(state["opt"])
        self.generator.set_state(state["generator"])
