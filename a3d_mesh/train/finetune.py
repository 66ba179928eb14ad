"""``--hybrid-finetune STEPS``: a short SDS polish of a hybrid, on a copy of the trained model.

A hybrid is the trained set evaluated at a code field u(x) (:mod:`a3d_mesh.hybrid`); no
retraining is needed, but across the blend zone the shared model was never asked to make *one*
object out of two, so seams can show. The method note (section 4) allows a short fine-tune with
a mixed prompt. Here each hybrid gets its own copy of the set's DMTet and colour fields and
is trained for a few SDS steps while always rendered at its own u(x). The set itself (the
in-memory :class:`TrainedSet`, its checkpoints and its exported assets) is never written to.

The mixed prompt. The diffusion model takes one text condition per image, so a per-point code
cannot be honoured pixel by pixel; the condition has to be one code ``u_bar`` for the whole
hybrid. We use the hybrid's *volume share*: ``u_bar = mean of u(x) over the grid vertices inside
the untuned hybrid`` (``sdf < 0``), and condition SDS on ``tau(u_bar)``, the text embeddings mixed
by that share (per camera view, ``tau(u_bar, view)``, when the run uses view-dependent prompting).
Why this and not the alternatives:

- It is exactly the A3D conditioning the shared model was trained with at interior codes
  (``tau(u) = sum_k u_k cond_k``), so the fine-tune asks for "a thing that is this much of each
  source", which the model already has a notion of, instead of a new prompt.
- A per-view *visible* share would change the prompt from view to view (the front of a
  half-and-half split is mostly one source), making the SDS target flicker; the volume share is
  one fixed number per hybrid, computed once before any step.
- Mixing by the spec's nominal parts (e.g. 50/50) would ignore how much of the shape each source
  really owns: a small head on a large body should not be half "head prompt".

Renders use a flat random background per step (the set's learned background is not part of a
:class:`TrainedSet`, and a flat one keeps SDS from painting seams into the background). Only
guidance ``kind: sds`` runs have a prior to fine-tune with; for ``kind: images`` the fine-tune is
skipped with a message and the hybrid is exported untuned (recorded in the manifest).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from a3d_mesh.cameras import sample_cameras
from a3d_mesh.config import ConfigError
from a3d_mesh.geometry import marching_tets
from a3d_mesh.hybrid import HybridSpec, code_field
from a3d_mesh.render.shading import random_light, render_mesh
from a3d_mesh.progress import Progress
from a3d_mesh.run import HybridAsset, TrainedSet, hybrid_assets
from a3d_mesh.train.guide import load_prior
from a3d_mesh.train.refine import add_regularisers, optimise

if TYPE_CHECKING:  # the guidance package is loaded only when a fine-tune is asked for
    from a3d_mesh.guidance import SDSGuidance

MAX_STEPS = 100_000
SKIP_IMAGES = "guidance.kind=images has no diffusion prior to fine-tune with"


def parse_steps(text: str | int | None) -> int:
    """``--hybrid-finetune`` value -> a step count >= 0 (None -> 0). Raises ConfigError (one line)."""
    if text is None:
        return 0
    s = str(text).strip()
    if not (s.isascii() and s.isdigit()) or int(s) > MAX_STEPS:  # isdigit alone takes '²'
        raise ConfigError(f"--hybrid-finetune: expected a whole number of steps in 0..{MAX_STEPS}, got '{text}'")
    return int(s)


@torch.no_grad()
def volume_share(ts: TrainedSet, u: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The hybrid's mean code over its own interior, ``[K]`` on the simplex (see module docstring).

    Averaged over the undeformed grid vertices (world frame) where the untuned hybrid's SDF is
    negative; an empty hybrid falls back to the mean over the whole grid.
    """
    grid = ts.dmtet.world_grid
    codes = u(grid)  # [V, K]
    sdf, _ = ts.dmtet.query(grid, codes)
    inside = sdf < 0
    share = codes[inside].mean(0) if bool(inside.any()) else codes.mean(0)
    return share / share.sum()


class FinetuneStage:
    """SDS steps on a copy of the set's fields, always rendered at one hybrid's code field.

    ``model``: the copy being tuned (a :class:`TrainedSet` whose ``dmtet``/``color`` are owned
    here). The per-vertex code of the DMTet grid is fixed, so it is evaluated once ([V, K]).
    """

    def __init__(self, model: TrainedSet, spec: HybridSpec, sds: "SDSGuidance", mix: torch.Tensor,
                 steps: int) -> None:
        cfg = model.cfg
        self.name = f"finetune {spec.name}"
        self.model, self.sds, self.mix, self.total_steps = model, sds, mix, steps
        self.u = code_field(spec, model.n)
        self.grid_codes = self.u(model.dmtet.world_grid).detach()  # [V, K]
        params = [{"params": model.dmtet.parameters(), "lr": cfg.refine.lr},
                  {"params": model.color.parameters(), "lr": cfg.refine.lr_color}]
        self.opt = torch.optim.Adam(params, betas=(0.9, 0.99), eps=1e-15)
        self.generator = torch.Generator().manual_seed(cfg.seed + 2)

    def step(self, i: int) -> dict[str, float]:
        c, g, m = self.model.cfg.refine, self.generator, self.model
        cams = sample_cameras(m.cfg.camera, g)
        light = random_light(cams, g)
        bg = torch.rand(3, generator=g).to(m.device).expand(len(cams), c.resolution, c.resolution, 3)
        sdf, grid_verts = m.dmtet.sdf_and_verts(self.grid_codes)
        verts, faces = marching_tets(grid_verts, m.dmtet.tets, sdf)
        if faces.shape[0] == 0:  # nothing to render: only the SDF regulariser can act
            loss, logs = sdf.sum() * 0.0, {"empty": 1.0}
        else:
            out = render_mesh(verts, faces, cams, c.resolution, color_fn=lambda p: m.color(p, self.u(p))[1],
                              light_dir=light, background=bg)
            views = self.sds.camera_views(cams.elevation, cams.azimuth)  # the view word of each camera
            res = self.sds(out.rgb, self.mix, i / max(self.total_steps, 1), generator=g, views=views)
            loss, logs = res.loss, {"sds": float(res.loss.detach()), "grad": float(res.grad_norm)}
        loss = add_regularisers(loss, c, sdf, m.dmtet.edges, (verts, faces) if faces.shape[0] else None)
        optimise(self.opt, loss)
        return {**logs, "faces": float(faces.shape[0])}


def _copy_model(ts: TrainedSet) -> TrainedSet:
    """An independent copy of the set's fields (train mode, gradients on), same config and prompts."""
    tuned = ts.copy()
    for net in (tuned.dmtet, tuned.color):
        net.train()
        net.requires_grad_(True)
    return tuned


def finetune_hybrids(ts: TrainedSet, specs: Sequence[HybridSpec], steps: int,
                     progress: Progress | None = None) -> list[tuple[TrainedSet, dict[str, Any]]]:
    """Fine-tune each hybrid on its own copy of the model; ``ts`` is left untouched.

    Returns, per spec, (model to evaluate the hybrid with, manifest record of the fine-tune). For
    ``guidance.kind=images`` runs (or ``steps == 0``) the model is ``ts`` itself and the record
    says why nothing was tuned.
    """
    progress = progress or Progress(quiet=True)
    if steps <= 0 or not specs:
        return [(ts, {"steps": 0}) for _ in specs]
    if ts.cfg.guidance.kind != "sds":
        progress.message(f"[finetune] skipped: {SKIP_IMAGES}; hybrids are exported untuned")
        return [(ts, {"steps": 0, "requested_steps": steps, "skipped": SKIP_IMAGES}) for _ in specs]
    # The same prior, loaded and conditioned as the run's stages were (multi-view priors included).
    prior = load_prior(ts.cfg, ts.prompts, ts.device, progress.message)
    out = []
    for spec in specs:
        mix = volume_share(ts, code_field(spec, ts.n))
        stage = FinetuneStage(_copy_model(ts), spec, prior(ts.cfg.refine.sds, ts.cfg.seed + 2),
                              mix, steps)
        t0 = time.monotonic()
        progress.start(stage.name, 0, steps)
        for i in range(steps):
            progress.update(i + 1, steps, stage.step(i))
        tuned = stage.model
        tuned.dmtet.eval().requires_grad_(False)
        tuned.color.eval().requires_grad_(False)
        share = {name: round(float(w), 4) for name, w in zip(ts.prompts.names, mix.tolist()) if w > 0}
        out.append((tuned, {"steps": steps, "prompt_mix": share, "seconds": round(time.monotonic() - t0, 2)}))
    return out


def tuned_hybrid_assets(ts: TrainedSet, specs: Sequence[HybridSpec], steps: int,
                        progress: Progress | None = None) -> list[HybridAsset]:
    """The hybrids as assets to finish, each fine-tuned ``steps`` SDS steps on its own copy of the
    model (``steps`` 0: the set's own model, untouched; the manifest record says so)."""
    if steps <= 0:
        return hybrid_assets(ts, specs)
    tuned = finetune_hybrids(ts, specs, steps, progress)
    return [HybridAsset(a.name, a.code, {**a.info, "finetune": rec}, None if model is ts else model)
            for a, (model, rec) in zip(hybrid_assets(ts, specs), tuned)]
