"""What a training step's renders are scored against: a diffusion prior or known target meshes.

Both stages hand a :class:`StepRender` to a *guide* and get back a scalar loss plus log values.
``PriorGuide`` wraps :class:`a3d_mesh.guidance.SDSGuidance` (score distillation at the step's code
u, against tau(u)); ``ImageTargetGuide`` is the supported ``guidance: images`` option: a
multi-view image loss against renders of one known mesh per object, applied at the corners of the
simplex (interior codes get no image loss: they are what the shared, low-capacity model makes of
the corners). It is what the known-targets tests and the editing use build on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

import torch
import torch.nn.functional as F

from a3d_mesh.cameras import Cameras
from a3d_mesh.meshio import SurfaceColors, load_mesh
from a3d_mesh.prompts import PromptSet
from a3d_mesh.render.shading import MeshRender, render_mesh
from a3d_mesh.simplex import CodeSample

if TYPE_CHECKING:  # the guidance package is loaded only when a run uses a prior
    from a3d_mesh.config import RunConfig
    from a3d_mesh.guidance import SDSConfig, SDSGuidance


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


class PriorGuide:
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


def load_prior(cfg: "RunConfig", prompts: PromptSet, device: torch.device,
               log: Callable[[str], None]) -> Callable[["SDSConfig", int], "SDSGuidance"]:
    """Load the run's diffusion prior once and embed its prompts; returns ``make(sds_config, seed)``,
    the score-distillation guidance of one stage (:class:`a3d_mesh.guidance.mvdream.MVDreamSDS` for
    a multi-view prior, else :class:`a3d_mesh.guidance.SDSGuidance`). The training stages and the
    hybrid fine-tune share this, so they load and condition the prior the same way.
    """
    from a3d_mesh.guidance import KNOWN_PRIORS, SDSGuidance, encode_prompts, load_components, truncation_warnings
    from a3d_mesh.guidance.mvdream import MVDreamSDS, check_multiview_cameras, multiview_source

    g = cfg.guidance
    # A multi-view prior (MVDream) scores views in groups of 4: check the cameras before loading.
    multiview = multiview_source(g.model) is not None
    if multiview:
        check_multiview_cameras(cfg.camera)
    log(f"[guidance] loading {g.model} on {device}")
    comps = load_components(g.model, device, base_model=g.base_model)
    if g.model in KNOWN_PRIORS or multiview:  # say which mirror, cache or layout the name resolved to
        log(f"[guidance] {g.model} loaded from {comps.source}")
    # SDS off the model's training size still runs, but guides poorly: say so once.
    for note in dict.fromkeys(comps.resolution_note(s.resolution) for s in (cfg.coarse.sds, cfg.refine.sds)):
        if note:
            log(note)
    # The camera embedding tells a multi-view prior the view: no view words in its prompts.
    view_rule = None if multiview else g.view_prompts
    if multiview and g.view_prompts.enabled:
        log("[guidance] multi-view prior: view-dependent prompts are not used")
    # A cut prompt loses its last words (and view word) without a sound otherwise (issue 28).
    for line in truncation_warnings(comps.tokenizer, prompts.names, prompts.prompts, prompts.negatives,
                                    view_rule):
        log(line)
    emb = encode_prompts(comps, prompts.prompts, prompts.negatives, view_rule)
    sds_class = MVDreamSDS if multiview else SDSGuidance

    def make(sds_cfg: "SDSConfig", seed: int) -> "SDSGuidance":
        return sds_class(comps, emb, sds_cfg, seed=seed)

    return make


# Distinct flat albedos for target meshes without colours of their own.
_PALETTE = [(0.85, 0.35, 0.25), (0.25, 0.55, 0.85), (0.35, 0.75, 0.35), (0.85, 0.75, 0.25),
            (0.65, 0.35, 0.75), (0.25, 0.75, 0.75)]


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
