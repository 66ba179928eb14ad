"""What a prior prefers: mean denoising errors of rendered shapes under prompts.

``denoising_errors`` renders a 3D shape with the training renderer (``toy.data.render_object``)
at a set of yaws, each in groups of 4 spread views conditioned on their true cameras, noises the
renders with fixed noise at a set of timesteps, and returns the prior's mean error
``E |eps(x_t, t, c, camera) - eps|^2`` per prompt. Lower is
more likely under that prompt (the diffusion ELBO up to weights). The difference
``err("") - err(prompt)`` is the implicit classifier ``log p(prompt | x)`` up to weights: the part
of the SDS gradient that classifier-free guidance multiplies by its scale, so a shape part that
does not raise it is a part SDS at a high guidance scale has no reason to keep.

Used by ``benchmarks/toy_prior_scores.py`` (the full table) and the shipped prior's tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from a3d_mesh.guidance import SDComponents, encode_prompts
from a3d_mesh.toy.data import DataConfig, render_object
from a3d_mesh.guidance.mvdream import is_multiview_unet
from a3d_mesh.guidance.sds import v_to_epsilon
from a3d_mesh.toy.prior import camera_labels
from a3d_mesh.toy.shapes import ToyObject


def contexts(comps: SDComponents, prompts: Sequence[str]) -> torch.Tensor:
    """``[P + 1, L, D]``: the prompts' text embeddings, then the unconditional one (``""``).
    Frees the text encoder, as every prompt encoding does."""
    emb = encode_prompts(comps, prompts)
    return torch.cat([emb.cond, emb.uncond[:1]])


def denoising_errors(comps: SDComponents, ctx: torch.Tensor, obj: ToyObject, timesteps: Sequence[int],
                     yaws: Sequence[float] = (0.0,), views: int = 8, seed: int = 1) -> torch.Tensor:
    """Mean denoising error ``[C]`` of ``obj`` under each of the ``C`` text contexts ``ctx`` ``[C, L, D]``.

    Args:
        comps: a loaded pixel-space prior (``vae is None``); a multi-view one sees each view's camera.
        ctx: text embeddings, e.g. from :func:`contexts`; every context sees the same noisy images.
        obj: the shape, drawn in its own colour (``obj.colour``), lit as in training.
        timesteps: the diffusion timesteps averaged over (each with its own fixed noise).
        yaws: the shape is turned by each of these angles (degrees about +Y) ... Off 0 it leaves
            the canonical pose while the cameras keep their true angles, so the error also says
            how well the object's front sits where the prior expects it (+Z).
        views: ... and seen from this many views each (a multiple of 4: spread groups in the
            ``toy.data.TOY_CAMERA`` ranges).
        seed: the generator of the views and lights (the same views for every yaw).
    """
    unet, alphas = comps.unet.float().eval(), torch.as_tensor(comps.scheduler.alphas_cumprod, dtype=torch.float32)
    cfg = DataConfig(views_per_object=views, p_albedo_only=0.0)
    renders = [render_object(obj, yaw, torch.Generator().manual_seed(seed), cfg) for yaw in yaws]
    x0 = torch.cat([r[0] for r in renders]).permute(0, 3, 1, 2) * 2 - 1
    # A single-view prior (format 1) takes no camera.
    extra = {"class_labels": camera_labels(torch.cat([r[1] for r in renders]))} if is_multiview_unet(unet) else {}
    err = torch.zeros(ctx.shape[0])
    for t in timesteps:
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(int(t)))
        xt = alphas[t].sqrt() * x0 + (1 - alphas[t]).sqrt() * noise
        tt = torch.full((x0.shape[0],), int(t))
        with torch.no_grad():
            for i in range(ctx.shape[0]):
                out = unet(xt, tt, encoder_hidden_states=ctx[i:i + 1].expand(x0.shape[0], -1, -1), return_dict=False,
                           **extra)[0]
                # Compared as noise, whatever the UNet predicts, so priors' tables stay comparable.
                eps = v_to_epsilon(out, xt, alphas[t]) if comps.prediction_type == "v_prediction" else out
                err[i] += float(((eps - noise) ** 2).mean()) / len(timesteps)
    return err
