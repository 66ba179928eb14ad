"""What a prior prefers: mean denoising errors of rendered shapes under prompts.

``denoising_errors`` renders a 3D shape with the training renderer (``toy.data.render_object``)
at evenly spaced yaws and a few random views each, noises the renders with fixed noise at a set of
timesteps, and returns the prior's mean error ``E |eps(x_t, t, c) - eps|^2`` per prompt. Lower is
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
from a3d_mesh.toy.shapes import ToyObject


def contexts(comps: SDComponents, prompts: Sequence[str]) -> torch.Tensor:
    """``[P + 1, L, D]``: the prompts' text embeddings, then the unconditional one (``""``).
    Frees the text encoder, as every prompt encoding does."""
    emb = encode_prompts(comps, prompts)
    return torch.cat([emb.cond, emb.uncond[:1]])


def denoising_errors(comps: SDComponents, ctx: torch.Tensor, obj: ToyObject, timesteps: Sequence[int],
                     yaws: int = 12, views: int = 4, seed: int = 1) -> torch.Tensor:
    """Mean denoising error ``[C]`` of ``obj`` under each of the ``C`` text contexts ``ctx`` ``[C, L, D]``.

    Args:
        comps: a loaded pixel-space prior (``vae is None``).
        ctx: text embeddings, e.g. from :func:`contexts`; every context sees the same noisy images.
        obj: the shape, drawn in its own colour (``obj.colour``), lit as in training.
        timesteps: the diffusion timesteps averaged over (each with its own fixed noise).
        yaws: renders at yaws ``0, 360 / yaws, ...`` degrees about +Y ...
        views: ... times this many random views each (``toy.data.TOY_CAMERA`` ranges).
        seed: the generator of the views and lights.
    """
    unet, alphas = comps.unet.float().eval(), comps.scheduler.alphas_cumprod
    cfg = DataConfig(views_per_object=views, p_albedo_only=0.0)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.cat([render_object(obj, k * 360.0 / yaws, g, cfg) for k in range(yaws)]).permute(0, 3, 1, 2) * 2 - 1
    err = torch.zeros(ctx.shape[0])
    for t in timesteps:
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(int(t)))
        xt = alphas[t].sqrt() * x0 + (1 - alphas[t]).sqrt() * noise
        tt = torch.full((x0.shape[0],), int(t))
        with torch.no_grad():
            for i in range(ctx.shape[0]):
                eps = unet(xt, tt, encoder_hidden_states=ctx[i:i + 1].expand(x0.shape[0], -1, -1), return_dict=False)[0]
                err[i] += float(((eps - noise) ** 2).mean()) / len(timesteps)
    return err
