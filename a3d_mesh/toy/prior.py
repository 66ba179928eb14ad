"""The toy prior: a small pixel-space, multi-view, camera- and text-conditioned diffusion model in
diffusers layout (MVDream's structure in miniature).

Why pixel space at 32 px (and no VAE): the toy world's images are flat-shaded furniture on
white; at 32 px a silhouette already tells a chair from a table. A latent model would need a VAE
trained first and would put an encoder in every SDS step; on a 2-core CPU the budget is better
spent on the UNet. The folder has SD's layout minus the ``vae`` (``model_index.json`` names it
``[null, null]``), and ``guidance.loader`` then runs SDS directly on ``[-1, 1]`` RGB, as
pixel-space priors (DeepFloyd IF style) do.

Parts:

- ``tokenizer``: the project's byte-level CLIP BPE (``guidance.tiny``) with whole-word merges for
  the toy vocabulary, context length ``TOY_MAX_LENGTH`` (captions are a few words);
- ``text_encoder``: a 2-layer ``CLIPTextModel`` of width 64, trained with the UNet;
- ``unet``: ``guidance.mvdream.MultiViewUNet2DConditionModel`` on ``[B, 3, 32, 32]`` (B a multiple
  of 4: groups of ``TOY_FRAMES`` views of one object), levels 32 -> 16 -> 8 px (32, 64, 64 channels)
  with attention at 8 px: self-attention across the group's views, cross-attention to the text;
  each view's camera (MVDream's 16-value conditioning, ``mvdream.cameras``) is added to the
  timestep embedding. So ``guidance.model=toy`` runs the MVDream guidance path (``MVDreamSDS``,
  4-view camera groups) end to end, and the prior knows where an object's front is (+Z);
- ``scheduler``: ``DDPMScheduler`` with the cosine ("squaredcos_cap_v2") betas and v-prediction.

Why v-prediction: the cosine schedule's last steps have almost no signal (``alpha_bar`` ~ 1e-9 at
t = 999), where an epsilon model's image estimate ``(x_t - sqrt(1 - a) eps) / sqrt(a)`` divides
its error by ``sqrt(a)``; the v2 prior trained that way drew every sample on a saturated random
background (corners 0.7 instead of white). ``v = sqrt(a) eps - sqrt(1 - a) x0`` is well posed at
every t (Salimans & Ho 2022), and the guidance converts it (``guidance.sds.v_to_epsilon``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from a3d_mesh.guidance.mvdream.cameras import mvdream_camera_from_angles
from a3d_mesh.guidance.mvdream.unet import is_multiview_unet
from a3d_mesh.guidance.mvdream.tiny import multiview_model_index
from a3d_mesh.guidance.tiny import BOS_TOKEN, EOS_TOKEN, tiny_vocab_and_merges, write_tiny_tokenizer
from a3d_mesh.guidance.views import wrap_azimuth
from a3d_mesh.toy.data import TOY_FRAMES
from a3d_mesh.toy.shapes import COLOURS, FAMILIES

TOY_MAX_LENGTH = 16
TOY_TEXT_WIDTH = 64
TOY_RESOLUTION = 32
TOY_WORDS = ("a", "an", "the") + FAMILIES + tuple(COLOURS)
TOY_MARKER = "a3d_toy.json"


def build_modules(vocab_size: int, eos_id: int, bos_id: int) -> dict[str, torch.nn.Module]:
    """Fresh ``unet`` and ``text_encoder`` (initialised from the global torch RNG)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    from a3d_mesh.guidance.mvdream.unet import MultiViewUNet2DConditionModel

    unet = MultiViewUNet2DConditionModel(
        num_frames=TOY_FRAMES,
        sample_size=TOY_RESOLUTION,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        # Attention at 8 px (and the mid block): a caption names a class and a colour, global
        # facts, the views meet there, and attention at 16 px would double a CPU training step.
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=TOY_TEXT_WIDTH,
        attention_head_dim=16,
        norm_num_groups=16,
        # The caption, attention-pooled, also joins the time embedding and so every ResNet block:
        # with cross-attention alone (8 px and the mid block) the colour word barely reached the
        # pixels (red r-b 0.09 in samples); pooled, 0.40 (benchmarks/RESULTS.md, toy prior v2).
        addition_embed_type="text",
        addition_embed_type_num_heads=4,
    )
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=TOY_TEXT_WIDTH, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=TOY_MAX_LENGTH, projection_dim=TOY_TEXT_WIDTH,
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id,
    ))
    return {"unet": unet, "text_encoder": text}


def new_scheduler(prediction_type: str = "v_prediction") -> object:
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False,
                         prediction_type=prediction_type)


def new_tokenizer(folder: Path) -> tuple[object, dict[str, int]]:
    """Write the toy tokenizer files into ``folder`` and load them (returns tokenizer, vocab)."""
    from transformers import CLIPTokenizer

    write_tiny_tokenizer(folder, words=TOY_WORDS, max_length=TOY_MAX_LENGTH)
    vocab, _ = tiny_vocab_and_merges(TOY_WORDS)
    return CLIPTokenizer.from_pretrained(str(folder)), vocab


def special_ids(vocab: dict[str, int]) -> tuple[int, int]:
    return vocab[EOS_TOKEN], vocab[BOS_TOKEN]


def save_prior(folder: Path, unet: torch.nn.Module, text_encoder: torch.nn.Module, tokenizer_dir: Path,
               scheduler: object, info: dict[str, object]) -> None:
    """Write the prior in diffusers layout (weights in float16 to halve the shipped size)."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    # Saved as half: the loader casts to float32 on CPU; the weights' range is far inside fp16's.
    unet.half().save_pretrained(folder / "unet")
    text_encoder.half().save_pretrained(folder / "text_encoder")
    unet.float(), text_encoder.float()
    if (folder / "tokenizer").resolve() != tokenizer_dir.resolve():
        shutil.copytree(tokenizer_dir, folder / "tokenizer", dirs_exist_ok=True)
    scheduler.save_pretrained(folder / "scheduler")  # type: ignore[attr-defined]
    index = multiview_model_index(vae=False)
    (folder / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    (folder / TOY_MARKER).write_text(json.dumps(info, indent=2), encoding="utf-8")


def camera_labels(angles: torch.Tensor) -> torch.Tensor:
    """The UNet's camera input ``[B, 16]`` of views at ``angles`` ``[B, 2]`` (elevation, azimuth in
    degrees, our frame), exactly as ``MVDreamSDS.camera_views`` conditions it."""
    return mvdream_camera_from_angles(angles[:, 0], angles[:, 1])


def orbit_angles(groups: int, elevation: float = 15.0, start: float = 0.0) -> torch.Tensor:
    """``[groups * TOY_FRAMES, 2]``: each group the views at azimuths ``start + 90 k`` (front first)."""
    az = start + torch.arange(TOY_FRAMES, dtype=torch.float32) * (360.0 / TOY_FRAMES)
    one = torch.stack([torch.full_like(az, elevation), wrap_azimuth(az)], -1)
    return one.repeat(groups, 1)


@torch.no_grad()
def sample(unet: torch.nn.Module, cond: torch.Tensor, uncond: torch.Tensor, generator: torch.Generator,
           scheduler: Any, angles: torch.Tensor | None = None, steps: int = 50,
           guidance_scale: float = 3.0) -> torch.Tensor:
    """DDIM samples with classifier-free guidance, in groups of ``TOY_FRAMES`` views of one object.

    Args:
        unet: the toy UNet (any device; float32).
        cond, uncond: ``[B, L, D]`` text embeddings of the captions and of ``""`` (B a multiple of
            4; a group's 4 rows normally carry the same caption).
        generator: CPU generator for the initial noise.
        scheduler: the prior's own scheduler (``SDComponents.scheduler``, or ``new_scheduler``'s
            in training): its betas and prediction type (epsilon or v) drive the DDIM steps.
        angles: ``[B, 2]`` camera elevation and azimuth of each view (default: every group seen at
            15 deg elevation from the front, right side, back and left side, ``orbit_angles``);
            unused by a single-view prior, which takes any B.
        steps: DDIM steps (eta = 0).
        guidance_scale: CFG scale.

    Returns:
        Images ``[B, R, R, 3]`` in ``[0, 1]``, top row first, on CPU.
    """
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(scheduler.config, clip_sample=True, set_alpha_to_one=True,
                                      timestep_spacing="trailing")
    sched.set_timesteps(steps)
    dev = next(unet.parameters()).device
    b, r = cond.shape[0], unet.config.sample_size
    extra = {}
    if is_multiview_unet(unet):  # single-view priors (format 1, before the multi-view toy prior) take no camera
        if b % TOY_FRAMES:
            raise ValueError(f"the toy prior samples groups of {TOY_FRAMES} views; got {b} captions")
        cams = camera_labels(orbit_angles(b // TOY_FRAMES) if angles is None else angles).to(dev)
        extra["class_labels"] = torch.cat([cams, cams])
    x = torch.randn(b, 3, r, r, generator=generator).to(dev)
    ctx = torch.cat([cond, uncond]).to(dev)
    for t in sched.timesteps:
        out = unet(torch.cat([x, x]), t.to(dev).expand(2 * b), encoder_hidden_states=ctx, return_dict=False,
                   **extra)[0]
        # CFG mixes v as it mixes eps: at a fixed x_t both are affine in the model's x0 estimate.
        o_c, o_u = out.chunk(2)
        x = sched.step(o_u + guidance_scale * (o_c - o_u), t, x).prev_sample
    return ((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu()
