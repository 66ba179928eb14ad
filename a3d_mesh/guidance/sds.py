"""Score distillation sampling (SDS) at a simplex code, with classifier-free guidance.

For renders at code ``u`` (latent ``z``, batch B), one call draws ``t`` and noise ``eps``, runs the
frozen UNet on ``z_t = sqrt(a_t) z + sqrt(1 - a_t) eps`` with ``tau(u)`` and ``tau-(u)`` (one
batched pass of 2B; with view-dependent prompting, each item's ``tau(u, view)``, see
``guidance.views``), forms ``eps_hat = eps_u + s (eps_c - eps_u)`` and returns the loss
``0.5 * ||z - stopgrad(z - g)||^2 / B`` with ``g = w(t) (eps_hat - eps)``, whose gradient with
respect to ``z`` is exactly ``g / B``. v-prediction models are converted to epsilon first.
Non-finite gradients are zeroed (and reported), then optionally clamped elementwise.

Inputs: RGB renders ``[B, H, W, 3]`` in ``[0, 1]``, top row first (``cfg.input = "rgb"``): they are
resized to ``cfg.resolution`` (square) and encoded by the VAE, and the gradient flows back through
the encoder; or latents ``[B, 4, h, w]`` (``cfg.input = "latent"``, the coarse stage). A
pixel-space model (no VAE, e.g. the toy prior) takes the resized ``[-1, 1]`` images themselves as
its "latents" ``[B, 3, R, R]``, so ``resolution`` is then the model's own image size.

Memory options (for 8-12 GB GPUs; all off by default, set in ``SDSConfig``):

- ``half_precision``: ``None`` keeps the loaded dtype (float16 on CUDA, float32 on CPU);
  ``True``/``False`` casts UNet and VAE to float16/float32. Half precision halves weights and
  activations (SD 2.1 base: UNet + VAE weights about 1.9 GB in fp16, 3.8 GB in fp32) and is the
  biggest saving.
- ``attention_slicing``: computes UNet attention in head slices (``set_attention_slice("auto")``).
  Lowers peak memory at a speed cost; rarely needed with PyTorch 2 SDPA attention.
- ``vae_slicing``: encodes the batch one image at a time; the 512 px VAE encoder's activations,
  kept for the backward pass, grow with batch size and dominate memory of RGB SDS.
- ``vae_checkpointing``: gradient checkpointing in the VAE encoder: recomputes its activations
  during backward instead of storing them (large saving at 512 px, ~30% slower encode/backward).
- ``channels_last``: stores the UNet in NHWC, which speeds up fp16 convolutions on tensor cores.
  Not a memory saving, but free on recent GPUs.

The text encoder is freed after the prompts are embedded (``encode_prompts``), saving ~0.7 GB (fp16).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from a3d_mesh.guidance.embeddings import PromptEmbeddings
from a3d_mesh.guidance.loader import ModelKindError, SDComponents
from a3d_mesh.guidance.schedule import WEIGHTINGS, Ramp, sample_timesteps, sds_weight, timestep_bounds


@dataclass
class SDSConfig:
    """SDS settings (plain data; presets fill it through :func:`a3d_mesh.config.merge`, like every config).

    Attributes:
        guidance_scale: classifier-free guidance scale s.
        t_min, t_max: timestep range bounds as fractions of T, as ``Ramp`` schedules of progress
            (the constructor also takes the preset forms of ``Ramp.from_data``: a number,
            ``[start, end]``, ``[start, end, begin, finish]`` or a mapping).
        weighting: ``"sds"`` (w = 1 - alpha_bar_t) or ``"uniform"`` (w = 1).
        grad_clip: ``None``, or the bound of an elementwise clamp of the latent gradient g.
        input: ``"rgb"`` (images through the VAE) or ``"latent"`` (latents used directly).
        resolution: side of the square image fed to the VAE in RGB mode (512 for SD 2.1 base,
            64 for the tiny model); the latent side is ``resolution / 8``.
        half_precision, attention_slicing, vae_slicing, vae_checkpointing, channels_last: memory
            options, see the module docstring.
        x0_std_rescale: multi-view (MVDream) priors only: how far the guided x0 prediction is
            rescaled towards the un-guided one's std per view group (0 = not at all, A3D: 0.5);
            see ``guidance.mvdream.sds``.
    """

    guidance_scale: float = 100.0
    t_min: Ramp = field(default_factory=lambda: Ramp(0.98, 0.02, 0.0, 0.8))
    t_max: Ramp = field(default_factory=lambda: Ramp(0.98, 0.50, 0.0, 0.8))
    weighting: Literal["sds", "uniform"] = "sds"
    grad_clip: float | None = None
    input: Literal["rgb", "latent"] = "rgb"
    resolution: int = 512
    half_precision: bool | None = None
    attention_slicing: bool = False
    vae_slicing: bool = False
    vae_checkpointing: bool = False
    channels_last: bool = False
    x0_std_rescale: float = 0.5

    def __post_init__(self) -> None:
        self.t_min = Ramp.from_data(self.t_min)
        self.t_max = Ramp.from_data(self.t_max)
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.input not in ("rgb", "latent"):
            raise ValueError(f"input must be 'rgb' or 'latent', got {self.input!r}")
        if self.resolution % 8:
            raise ValueError(f"resolution must be a multiple of 8 (VAE factor), got {self.resolution}")
        if not 0.0 <= self.x0_std_rescale <= 1.0:
            raise ValueError(f"x0_std_rescale must be in [0, 1], got {self.x0_std_rescale}")


@dataclass
class SDSOutput:
    """Result of one SDS evaluation.

    Attributes:
        loss: scalar float32 tensor; backpropagating it puts ``g / B`` on the latents.
        grad_norm: L2 norm of the applied latent gradient g over the batch (after the NaN guard,
            before clipping).
        t: ``[B]`` int64 timesteps used.
        w: ``[B]`` float32 weights w(t).
        nonfinite: True when the raw gradient had NaN/inf and was zeroed.
    """

    loss: torch.Tensor
    grad_norm: float
    t: torch.Tensor
    w: torch.Tensor
    nonfinite: bool = False


def apply_memory_options(components: SDComponents, cfg: SDSConfig) -> None:
    """Apply ``cfg``'s dtype and memory flags to the UNet and VAE in place."""
    if cfg.half_precision is not None:
        dtype = torch.float16 if cfg.half_precision else torch.float32
        if dtype != components.dtype:
            components.unet.to(dtype=dtype)
            if components.vae is not None:
                components.vae.to(dtype=dtype)
            components.dtype = dtype
    if cfg.attention_slicing:
        components.unet.set_attention_slice("auto")
    if cfg.vae_slicing and components.vae is not None:
        components.vae.enable_slicing()
    if cfg.vae_checkpointing and components.vae is not None:
        components.vae.enable_gradient_checkpointing()
    if cfg.channels_last:
        components.unet.to(memory_format=torch.channels_last)


def latent_loss(latents: torch.Tensor, grad: torch.Tensor, grad_clip: float | None) -> tuple[torch.Tensor, float, bool]:
    """The score-distillation loss whose gradient w.r.t. ``latents`` [B,4,h,w] is ``grad / B``:
    ``0.5 * ||z - sg(z - grad)||^2 / B``. A non-finite ``grad`` is zeroed (the step does nothing)
    rather than poisoning the parameters; ``grad_clip`` clamps it elementwise. Returns (loss,
    |grad| before clipping, whether it was non-finite), with one host sync for both numbers.
    """
    finite = torch.isfinite(grad).all()  # the guard itself stays on the device
    grad = torch.where(finite, grad, torch.zeros_like(grad))
    norm, finite_f = torch.stack([grad.norm(), finite.float()]).tolist()
    if grad_clip is not None:
        grad = grad.clamp(-grad_clip, grad_clip)
    # nan_to_num passes gradient only where latents are finite, so a NaN render cannot turn the
    # (zeroed) gradient into NaN through z - stopgrad(z).
    z = torch.nan_to_num(latents, nan=0.0, posinf=0.0, neginf=0.0)
    loss = 0.5 * (z - (z - grad).detach()).pow(2).sum() / latents.shape[0]
    return loss, float(norm), finite_f < 0.5


def classifier_free_epsilon(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``eps_u + scale * (eps_c - eps_u)`` (any matching shapes)."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def v_to_epsilon(v: torch.Tensor, z_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Epsilon from a v-prediction: ``eps = sqrt(a) v + sqrt(1 - a) z_t`` (a broadcast to z_t)."""
    return alpha_bar.sqrt() * v + (1.0 - alpha_bar).sqrt() * z_t


def images_to_vae_input(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """``[B, H, W, 3]`` in ``[0, 1]`` (top row first) -> ``[B, 3, R, R]`` in ``[-1, 1]``.

    Shrinking uses antialiased bilinear filtering so small details do not alias into the VAE;
    the resize is differentiable.
    """
    if images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"RGB SDS expects images [B, H, W, 3], got {tuple(images.shape)}")
    x = images.permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    if (h, w) != (resolution, resolution):
        shrink = h > resolution or w > resolution
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=shrink)
    return x * 2.0 - 1.0


class SDSGuidance:
    """SDS loss from a frozen SD-family model, at simplex codes of a prompt set.

    Args:
        components: loaded model parts (``load_components``); modified in place by the memory
            options of ``cfg``.
        embeddings: the prompt set's cached embeddings (``encode_prompts``).
        cfg: SDS settings.
        seed: seed of the internal CPU generator used for t, the noise and the VAE posterior
            sample when the call passes no generator (so runs are reproducible on any device).
    """

    def __init__(self, components: SDComponents, embeddings: PromptEmbeddings, cfg: SDSConfig, seed: int = 0) -> None:
        frames = getattr(getattr(components.unet, "config", None), "num_frames", None)
        if isinstance(frames, int) and not getattr(self, "multiview", False):
            # A multi-view UNet needs views in groups with cameras: guidance.mvdream.MVDreamSDS.
            raise ModelKindError(f"'{components.model_id}' is a multi-view (MVDream) prior, which single-view SDS "
                                 "cannot use (hybrid fine-tuning supports Stable Diffusion priors only)")
        apply_memory_options(components, cfg)
        self.components = components
        self.cfg = cfg
        self.device = components.device
        self.embeddings = embeddings.to(self.device)
        alphas = components.scheduler.alphas_cumprod
        self.alphas_cumprod = torch.as_tensor(alphas, dtype=torch.float32).to(self.device)
        self.num_train_timesteps = int(components.scheduler.config.num_train_timesteps)
        self.prediction_type = components.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"SDS supports epsilon and v_prediction models, not {self.prediction_type!r}")
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    def camera_views(self, elevation: torch.Tensor, azimuth: torch.Tensor) -> torch.Tensor | None:
        """The ``views`` argument for renders from cameras at ``elevation``/``azimuth`` ``[B]``
        (degrees, our frame): ``[B]`` int64 on the cameras' device, or ``None`` when the
        embeddings have a single view (view prompting off). Cameras are drawn on the CPU, and the
        indices stay there: checking their range there costs no device synchronisation."""
        if self.embeddings.num_views == 1:
            return None
        return self.embeddings.view_index(elevation, azimuth)

    def timestep_range(self, progress: float) -> tuple[int, int]:
        """Inclusive integer ``(t_lo, t_hi)`` at ``progress`` in ``[0, 1]``."""
        return timestep_bounds(self.cfg.t_min, self.cfg.t_max, progress, self.num_train_timesteps)

    def _randn(self, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=generator.device).to(self.device)

    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Differentiable VAE encoding: ``[B, H, W, 3]`` in ``[0, 1]`` -> latents ``[B, 4, R/8, R/8]``
        float32, scaled as the UNet expects (posterior sample, then ``scaling_factor``). Without a
        VAE (pixel-space model) the resized images ``[B, 3, R, R]`` in ``[-1, 1]`` are the latents."""
        gen = generator if generator is not None else self.generator
        vae = self.components.vae
        if vae is None:
            return images_to_vae_input(images, self.cfg.resolution).float()
        x = images_to_vae_input(images, self.cfg.resolution).to(self.components.dtype)
        dist = vae.encode(x).latent_dist
        z = dist.mean + dist.std * self._randn(dist.mean.shape, gen).to(dist.mean.dtype)
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return ((z.float() - shift) * float(vae.config.scaling_factor)).float()

    def _context(self, u: torch.Tensor, batch: int, views: torch.Tensor | None = None) -> torch.Tensor:
        """``[2B, L, D]`` in the model dtype: tau(u, view_b) for the first B rows, tau-(u, view_b)
        for the rest (``views`` ``[B]``; ``None``: view 0 for every item)."""
        if views is not None and views.shape[0] != batch:
            raise ValueError(f"{views.shape[0]} views for a batch of {batch}")
        tau, tau_neg = self.embeddings.mix(u.to(self.device), views)
        if tau.dim() == 2:
            tau, tau_neg = tau.expand(batch, -1, -1), tau_neg.expand(batch, -1, -1)
        elif tau.shape[0] != batch:
            raise ValueError(f"{tau.shape[0]} codes for a batch of {batch}")
        return torch.cat([tau, tau_neg]).to(self.components.dtype)

    @torch.no_grad()
    def guided_epsilon(self, z_t: torch.Tensor, t: torch.Tensor, u: torch.Tensor,
                       views: torch.Tensor | None = None) -> torch.Tensor:
        """Classifier-free-guided epsilon ``[B, 4, h, w]`` float32 for noisy latents ``z_t`` at ``t``
        (each item conditioned on its view's embeddings when ``views`` ``[B]`` is given)."""
        batch = z_t.shape[0]
        model_in = torch.cat([z_t, z_t]).to(self.components.dtype)
        out = self.components.unet(
            model_in, torch.cat([t, t]), encoder_hidden_states=self._context(u, batch, views), return_dict=False
        )[0].float()
        if self.prediction_type == "v_prediction":
            alpha_bar = self.alphas_cumprod[torch.cat([t, t])].view(-1, 1, 1, 1)
            out = v_to_epsilon(out, torch.cat([z_t, z_t]).float(), alpha_bar)
        eps_cond, eps_uncond = out.chunk(2)
        return classifier_free_epsilon(eps_cond, eps_uncond, self.cfg.guidance_scale)

    def __call__(
        self,
        inputs: torch.Tensor,
        u: torch.Tensor,
        progress: float,
        generator: torch.Generator | None = None,
        views: torch.Tensor | None = None,
    ) -> SDSOutput:
        """SDS loss of a batch of renders at code ``u``.

        Args:
            inputs: ``[B, H, W, 3]`` images in ``[0, 1]`` (``cfg.input == "rgb"``) or latents
                ``[B, 4, h, w]`` (``"latent"``); must carry the graph to the parameters.
            u: ``[K]`` simplex code shared by the batch (or ``[B, K]``, one per item).
            progress: stage progress in ``[0, 1]`` (drives the t-range schedules).
            generator: RNG for t, noise and VAE sampling; defaults to the internal seeded one.
            views: ``[B]`` int64 view of each render (``embeddings.view_index`` of its camera),
                selecting its view-dependent prompt embeddings; ``None``: view 0 for all.

        Returns:
            ``SDSOutput`` (loss to backpropagate, diagnostics).
        """
        gen = generator if generator is not None else self.generator
        if self.cfg.input == "rgb":
            latents = self.encode_images(inputs, gen)
        else:
            # Latent renders are for VAE models; a pixel-space model takes input="rgb".
            if inputs.dim() != 4 or inputs.shape[1] != 4:
                raise ValueError(f"latent SDS expects latents [B, 4, h, w], got {tuple(inputs.shape)}")
            latents = inputs.float()
        batch = latents.shape[0]
        lo, hi = self.timestep_range(progress)
        t = sample_timesteps(lo, hi, batch, gen, self.device)
        noise = self._randn(latents.shape, gen)
        alpha_bar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        z_t = alpha_bar.sqrt() * latents.detach() + (1.0 - alpha_bar).sqrt() * noise
        w = sds_weight(self.alphas_cumprod, t, self.cfg.weighting)
        raw = w.view(-1, 1, 1, 1) * (self.guided_epsilon(z_t, t, u, views) - noise)
        loss, norm, nonfinite = latent_loss(latents, raw, self.cfg.grad_clip)
        return SDSOutput(loss=loss, grad_norm=norm, t=t, w=w, nonfinite=nonfinite)
