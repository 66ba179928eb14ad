"""Stage 2: the shared DMTet grid, initialised from the coarse NeRF, rasterised at high resolution.

The colour field is the coarse NeRF's albedo head (same shared grid + u-conditioned MLP), so the
refine stage starts from the coarse stage's colours and keeps training them at ``lr_color``.

NeRF -> DMTet hand-off (the usual failure point): for each object k the density level is chosen so
that the marching-tets mesh of ``density - level`` at e_k has the raster silhouettes that best
match (IoU) the NeRF's own silhouettes (opacity above ``init_opacity``) from ``init_views``
cameras; the level is logged. The shared SDF field is then fitted to every corner's signed,
thresholded density at once.

Optional coverage floor (``min_opacity``, as in the coarse stage): a hinge on each view's mesh
coverage, so SDS cannot shrink a small object of a joint run to nothing between the hand-off and
export. It must act before: an empty mesh has no pixels to give it a gradient.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from a3d_mesh.cameras import orbit_cameras, pixel_rays, sample_cameras
from a3d_mesh.config import RefineConfig, RunConfig
from a3d_mesh.fields import NeRFField
from a3d_mesh.geometry import (fit_dmtet, laplacian_smoothness, marching_tets, mesh_target,
                               normal_consistency, sdf_sign_entropy, tet_grid)
from a3d_mesh.render.shading import Background, random_light, render_mesh
from a3d_mesh.run.trained import dmtet_field
from a3d_mesh.simplex import corner, sample_code
from a3d_mesh.train.coarse import add_min_opacity, render_nerf
from a3d_mesh.train.guide import Guide, StepRender


def density_sdf(density: torch.Tensor, level: float) -> torch.Tensor:
    """Signed distance-like values from density: negative inside (density above ``level``).

    The scale is normalised by the level so fitting targets are O(1) whatever the density range.
    """
    return (level - density) / max(level, 1e-6)


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    inter = (a & b).sum().item()
    union = (a | b).sum().item()
    return inter / union if union else 1.0


@torch.no_grad()
def choose_levels(field: NeRFField, cfg: RunConfig, n_objects: int, device: torch.device,
                  log: Callable[[str], None]) -> list[float]:
    """Per object, the density level whose extracted mesh's silhouettes best match the NeRF's
    (its opacity above ``cfg.refine.init_opacity``)."""
    c = cfg.refine
    verts01, tets = tet_grid(min(c.tet_resolution, 64))
    verts = (verts01 * 2 * cfg.bound).to(device)
    tets = tets.to(device)
    res = 64
    cams = orbit_cameras(cfg.camera, c.init_views, elevation=cfg.camera.eval_elevation)
    levels: list[float] = []
    for k in range(n_objects):
        u = corner(k, n_objects, device)
        out, _ = render_nerf(field, u, cams, res, cfg.coarse.samples_per_ray, cfg.bound, None, None, None,
                             normals=False)
        target = out.opacity.view(len(cams), res, res) > c.init_opacity
        dens = torch.cat([field.density(verts[s:s + 65536], u) for s in range(0, verts.shape[0], 65536)])
        pos = dens[dens > 0]
        if pos.numel() == 0:
            levels.append(1.0)
            log(f"[refine] object {k}: NeRF is empty; density level 1.0")
            continue
        # Candidates: log-spaced between a low quantile and a high quantile of the positive densities.
        lo = float(torch.quantile(pos[:100000], 0.5).clamp_min(1e-3))
        hi = float(torch.quantile(pos[:100000], 0.999).clamp_min(lo * 1.01))
        cands = [math.exp(x) for x in torch.linspace(math.log(lo), math.log(hi), 12).tolist()]
        best, best_iou = cands[0], -1.0
        for lvl in cands:
            mv, mf = marching_tets(verts, tets, density_sdf(dens, lvl))
            if mf.shape[0] == 0:
                continue
            sil = render_mesh(mv, mf, cams, res).mask[..., 0] > 0.5
            iou = _iou(sil, target)
            if iou > best_iou:
                best, best_iou = lvl, iou
        levels.append(best)
        log(f"[refine] object {k}: density level {best:.4g} (silhouette IoU {max(best_iou, 0):.3f} vs NeRF opacity)")
    return levels


def add_regularisers(loss: torch.Tensor, c: RefineConfig, sdf: torch.Tensor, edges: torch.Tensor,
                     mesh: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """``loss`` plus the mesh stage's geometric regularisers: normal consistency and Laplacian
    smoothness of the extracted mesh (when there is one) and the SDF sign-change term on the grid."""
    if mesh is not None:
        verts, faces = mesh
        if c.normal_consistency_weight > 0:
            loss = loss + c.normal_consistency_weight * normal_consistency(verts, faces)
        if c.laplacian_weight > 0:
            loss = loss + c.laplacian_weight * laplacian_smoothness(verts, faces)
    if c.sdf_entropy_weight > 0:
        loss = loss + c.sdf_entropy_weight * sdf_sign_entropy(sdf, edges)
    return loss


def optimise(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimiser step on ``loss``; skipped when nothing depends on the parameters (an empty
    mesh with no SDF regulariser gives a constant loss)."""
    opt.zero_grad(set_to_none=True)
    if loss.requires_grad:
        loss.backward()
        opt.step()


class RefineStage:
    """The DMTet stage as a :class:`a3d_mesh.train.loop.Stage`."""

    name = "refine"

    def __init__(self, cfg: RunConfig, n_objects: int, guide: Guide, color: NeRFField, background: Background,
                 device: torch.device) -> None:
        c = cfg.refine
        self.cfg, self.n, self.guide, self.device = cfg, n_objects, guide, device
        self.total_steps = c.steps
        self.dmtet = dmtet_field(cfg, n_objects).to(device)
        self.color, self.background = color, background
        self.levels: list[float] = []
        self.opt = torch.optim.Adam([
            {"params": self.dmtet.parameters(), "lr": c.lr, "name": "dmtet"},
            {"params": list(color.parameters()) + list(background.parameters()), "lr": c.lr_color, "name": "color"},
        ], betas=(0.9, 0.99), eps=1e-15)
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)

    def initialise(self, log: Callable[[str], None]) -> None:
        """Fit the shared SDF to the coarse NeRF at every corner (chosen levels logged)."""
        c = self.cfg.refine
        if c.init_threshold == "auto":
            self.levels = choose_levels(self.color, self.cfg, self.n, self.device, log)
        else:
            self.levels = [float(c.init_threshold)] * self.n
            log(f"[refine] fixed density level {self.levels[0]:.4g} for every object")
        targets = [
            (lambda p, k=k: density_sdf(self.color.density(p, corner(k, self.n, self.device)), self.levels[k]))
            for k in range(self.n)
        ]
        fit_dmtet(self.dmtet, targets, steps=c.init_steps, generator=self.generator, clamp=1.0)

    def initialise_from_mesh(self, verts: torch.Tensor, faces: torch.Tensor) -> None:
        """Every corner starts as the input mesh (editing use): fit to its signed distance."""
        target = mesh_target(verts.to(self.device), faces.to(self.device))
        fit_dmtet(self.dmtet, [target] * self.n, steps=self.cfg.refine.init_steps, generator=self.generator,
                  cache_targets=True)  # metric distances: no clamp, so far-field signs are stable

    def step(self, i: int) -> dict[str, float]:
        c, g = self.cfg.refine, self.generator
        code = sample_code(self.n, self.cfg.sampling, g)
        u = code.u.to(self.device)
        cams = sample_cameras(self.cfg.camera, g)
        light = random_light(cams, g)
        flat_bg = torch.rand(3, generator=g)
        sdf, grid_verts = self.dmtet.sdf_and_verts(u)
        verts, faces = marching_tets(grid_verts, self.dmtet.tets, sdf)
        res, b = c.resolution, len(cams)
        if self.guide.flat_background(code):
            bg = flat_bg.to(self.device).expand(b, res, res, 3)
        else:
            bg = self.background(pixel_rays(cams.to(self.device), res, res)[1])
        if faces.shape[0] == 0:  # an empty shape: only the SDF regulariser can act on it
            loss, logs = sdf.sum() * 0.0, {"empty": 1.0}
        else:
            out = render_mesh(verts, faces, cams, res, color_fn=lambda p: self.color(p, u)[1], light_dir=light,
                              background=bg)
            progress = i / max(self.total_steps, 1)
            loss, logs = self.guide(StepRender(out.rgb, out.mask, bg, code, cams, light, progress, out.normal,
                                               out.depth), g)
            loss = add_min_opacity(loss, logs, out.mask, c.min_opacity, c.min_opacity_weight)
        loss = add_regularisers(loss, c, sdf, self.dmtet.edges, (verts, faces) if faces.shape[0] else None)
        optimise(self.opt, loss)
        logs.update({"loss": float(loss.detach()), "faces": float(faces.shape[0])})
        return logs

    def state_dict(self) -> dict[str, Any]:
        return {"dmtet": self.dmtet.state_dict(), "color": self.color.state_dict(),
                "background": self.background.state_dict(), "opt": self.opt.state_dict(),
                "generator": self.generator.get_state(), "levels": list(self.levels)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dmtet.load_state_dict(state["dmtet"])
        self.color.load_state_dict(state["color"])
        self.background.load_state_dict(state["background"])
        self.opt.load_state_dict(state["opt"])
        self.generator.set_state(state["generator"])
        self.levels = list(state["levels"])
