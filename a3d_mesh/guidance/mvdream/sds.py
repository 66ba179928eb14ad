"""MVDream score distillation: views in groups, x0-reconstruction loss, A3D's mixed conditioning.

For B renders (B a multiple of F = ``unet.num_frames``, 4; the F views of a group consecutive,
as ``a3d_mesh.cameras.sample_cameras`` with ``view_group = 4`` draws them) at simplex code u, one
call:

1. encodes the renders to latents z ``[B, 4, h, w]`` (``SDSGuidance.encode_images``: resized to
   ``cfg.resolution``, 256 for MVDream, gradient through the VAE encoder);
2. draws one t per group (MVDream was trained with one noise level across a group's views) and
   noise eps, forms ``z_t``, and runs the multi-view UNet once on ``[2B]`` (conditional rows with
   ``tau(u) = sum_k u_k tau_k``, unconditional rows with ``tau-(u)``, A3D's mixtures; each
   view's camera as the camera embedding);
3. predicts ``x0 = (z_t - sqrt(1 - a_t) eps_hat) / sqrt(a_t)`` from the guided epsilon
   ``eps_hat = eps_u + s (eps_c - eps_u)``, and, against the over-saturation of large guidance
   scales, rescales it per group towards the un-guided ``x0_c`` (from ``eps_c`` alone):
   ``x0 <- r * x0 * std(x0_c) / std(x0) + (1 - r) * x0`` (std over the group's views and pixels,
   r = ``cfg.x0_std_rescale``, 0.5); for a pixel-space prior (no VAE: the toy prior) x0 is then
   clamped to the image range ``[-1, 1]``, as its own sampler clips it: at a large scale and a
   high t the guided estimate overshoots by orders of magnitude, and the x0 loss would pass that
   on (losses of 500-5000 a step, measured), drowning the stages' other terms;
4. returns ``0.5 * ||z - stopgrad(x0)||^2 / B``; its gradient on z is ``(z - x0) / B``.

Non-finite gradients are zeroed (reported in ``SDSOutput.nonfinite``), then optionally clamped.
View-dependent prompting is not used: the camera embedding tells MVDream the view.
"""

from __future__ import annotations

from typing import Any

import torch

from a3d_mesh.guidance.embeddings import PromptEmbeddings
from a3d_mesh.guidance.loader import SDComponents
from a3d_mesh.guidance.mvdream.cameras import mvdream_camera_from_angles
from a3d_mesh.guidance.mvdream.unet import is_multiview_unet, set_multiview_attention
from a3d_mesh.guidance.schedule import sample_timesteps
from a3d_mesh.guidance.sds import SDSConfig, SDSGuidance, SDSOutput, latent_loss, v_to_epsilon


MVDREAM_FRAMES = 4  # views per group of every released MVDream model


def check_multiview_cameras(camera: Any, frames: int = MVDREAM_FRAMES) -> None:
    """Raise ``ValueError`` (one line) unless the stages' cameras (``RunConfig.camera``) come in
    groups of ``frames`` evenly spread views: ``views_per_step`` a multiple of ``frames``, and
    ``view_group = frames`` (or, for exactly ``frames`` views, one spread group)."""
    n, group = camera.views_per_step, camera.view_group
    if n % frames:
        raise ValueError(f"a multi-view prior scores views in groups of {frames}: set camera.views_per_step to a "
                         f"multiple of {frames} (got {n}) and camera.view_group={frames}")
    if group != frames and not (group == 0 and n == frames and camera.spread_views):
        raise ValueError(f"a multi-view prior needs its views in evenly spread groups of {frames}: set "
                         f"camera.view_group={frames} (got {group})")


def rescale_x0(x0: torch.Tensor, x0_plain: torch.Tensor, frames: int, factor: float) -> torch.Tensor:
    """Blend ``x0`` ``[B, C, h, w]`` with itself rescaled to the per-group std of ``x0_plain``:
    ``factor * x0 * std(x0_plain) / std(x0) + (1 - factor) * x0``, std over each group of
    ``frames`` consecutive views (all their channels and pixels)."""
    if factor == 0:
        return x0
    groups = x0.shape[0] // frames
    std = x0.reshape(groups, -1).std(dim=1)
    std_plain = x0_plain.reshape(groups, -1).std(dim=1)
    scale = ((std_plain + 1e-8) / (std + 1e-8)).repeat_interleave(frames).view(-1, 1, 1, 1)
    return factor * x0 * scale + (1.0 - factor) * x0


class MVDreamSDS(SDSGuidance):
    """SDS from a multi-view (MVDream) prior at simplex codes of a prompt set.

    Args:
        components: loaded parts whose ``unet`` is a ``MultiViewUNet2DConditionModel``.
        embeddings: the prompts' embeddings (one view: view prompting off).
        cfg: SDS settings; ``guidance_scale``, ``t_min``/``t_max``, ``resolution``, ``grad_clip``,
            ``x0_std_rescale`` and the memory options are used (``weighting`` is not: the
            x0-reconstruction loss has no w(t)); attention slicing is undone, since it would
            attend per view.
        seed: seed of the internal CPU generator (t, noise, VAE sampling).

    ``camera_views`` gives the per-render camera conditioning that the stages pass back as
    ``views``, so the generic ``train.guide.PriorGuide`` drives this class unchanged.
    """

    multiview = True

    def __init__(self, components: SDComponents, embeddings: PromptEmbeddings, cfg: SDSConfig, seed: int = 0) -> None:
        if not is_multiview_unet(components.unet):
            raise ValueError("MVDreamSDS needs a multi-view UNet (guidance.model=mvdream-sd2.1 or tiny-mvdream)")
        if embeddings.num_views != 1:
            raise ValueError("a multi-view prior takes its view from the camera; turn view prompts off "
                             "(guidance.view_prompts.enabled=false)")
        super().__init__(components, embeddings, cfg, seed)
        self.frames = int(components.unet.config.num_frames)
        set_multiview_attention(components.unet, self.frames)  # after apply_memory_options' slicing

    def camera_views(self, elevation: torch.Tensor, azimuth: torch.Tensor) -> torch.Tensor:
        """MVDream camera conditioning ``[B, 16]`` float32 (CPU) of cameras at ``elevation`` /
        ``azimuth`` ``[B]`` (degrees, our frame, looking at the origin); see ``mvdream.cameras``."""
        return mvdream_camera_from_angles(elevation, azimuth)

    @torch.no_grad()
    def predict_x0(self, z_t: torch.Tensor, t: torch.Tensor, u: torch.Tensor,
                   cameras: torch.Tensor) -> torch.Tensor:
        """Guided, std-rescaled x0 ``[B, 4, h, w]`` float32 for noisy latents ``z_t`` at ``t`` ``[B]``
        with cameras ``[B, 16]`` (steps 2-3 of the module docstring)."""
        batch = z_t.shape[0]
        dtype = self.components.dtype
        model_in = torch.cat([z_t, z_t]).to(dtype)
        t2, cams2 = torch.cat([t, t]), torch.cat([cameras, cameras]).to(self.device, dtype)
        out = self.components.unet(model_in, t2, encoder_hidden_states=self._context(u, batch),
                                   class_labels=cams2, return_dict=False)[0].float()
        alpha_bar = self.alphas_cumprod[t2].view(-1, 1, 1, 1)
        if self.prediction_type == "v_prediction":
            out = v_to_epsilon(out, model_in.float(), alpha_bar)
        eps_cond, eps_uncond = out.chunk(2)
        a = alpha_bar[:batch]
        eps_hat = eps_uncond + self.cfg.guidance_scale * (eps_cond - eps_uncond)
        x0 = (z_t - (1.0 - a).sqrt() * eps_hat) / a.sqrt()
        x0_plain = (z_t - (1.0 - a).sqrt() * eps_cond) / a.sqrt()
        x0 = rescale_x0(x0, x0_plain, self.frames, self.cfg.x0_std_rescale)
        # Latents have no fixed range; a pixel-space model's images do (step 3 of the docstring).
        return x0 if self.components.vae is not None else x0.clamp(-1.0, 1.0)

    def __call__(self, inputs: torch.Tensor, u: torch.Tensor, progress: float,
                 generator: torch.Generator | None = None, views: torch.Tensor | None = None) -> SDSOutput:
        """x0-reconstruction SDS loss of renders at code ``u``.

        Args:
            inputs: ``[B, H, W, 3]`` renders in ``[0, 1]`` (top row first), B a multiple of 4,
                each group's views consecutive; must carry the graph to the parameters.
            u: ``[K]`` simplex code shared by the batch.
            progress: stage progress in ``[0, 1]`` (the t-range schedules).
            generator: RNG for t, noise and VAE sampling (default: the internal seeded one).
            views: cameras ``[B, 16]`` from :meth:`camera_views` (required).
        """
        if views is None or views.dim() != 2 or views.shape[-1] != 16:
            raise ValueError("a multi-view prior needs each render's camera: views=[B, 16] from camera_views()")
        gen = generator if generator is not None else self.generator
        latents = self.encode_images(inputs, gen) if self.cfg.input == "rgb" else inputs.float()
        batch = latents.shape[0]
        if batch % self.frames or views.shape[0] != batch:
            raise ValueError(f"a multi-view prior scores views in groups of {self.frames}: got {batch} renders and "
                             f"{views.shape[0]} cameras (set camera.views_per_step to a multiple of {self.frames})")
        lo, hi = self.timestep_range(progress)
        t = sample_timesteps(lo, hi, batch // self.frames, gen, self.device).repeat_interleave(self.frames)
        noise = self._randn(latents.shape, gen)
        alpha_bar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        z_t = alpha_bar.sqrt() * latents.detach() + (1.0 - alpha_bar).sqrt() * noise
        x0 = self.predict_x0(z_t, t, u, views)
        # x0-reconstruction: the gradient on z is z - sg(x0_hat), i.e. loss 0.5 ||z - sg(x0_hat)||^2.
        loss, norm, nonfinite = latent_loss(latents, latents.detach() - x0, self.cfg.grad_clip)
        w = torch.ones(batch, dtype=torch.float32, device=t.device)
        return SDSOutput(loss=loss, grad_norm=norm, t=t, w=w, nonfinite=nonfinite)
