"""A tiny random-weight MVDream-like pipeline for tests and CPU smoke runs (``guidance.model=tiny-mvdream``).

Same parts as ``guidance.tiny``'s SD pipeline (its tokenizer, VAE and 32-wide CLIP text encoder,
DDPM scheduler), but the UNet is a :class:`MultiViewUNet2DConditionModel` of 4 views built from
LDM parameters (``TINY_LDM_CONFIG``) through the same conversion as the real checkpoints, so that
it can also be written in the original single-file layout (``convert.to_ldm_state_dict``). Saved
with ``save_pretrained`` and loaded through the same loader as an MVDream folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from a3d_mesh.guidance.mvdream.convert import diffusers_config
from a3d_mesh.guidance.mvdream.unet import MultiViewUNet2DConditionModel
from a3d_mesh.guidance.tiny import TINY_TEXT_WIDTH, model_index, models_dir, write_tiny_pipeline

TINY_MV_FORMAT_VERSION = 1
TINY_MV_MARKER = "a3d_tiny_mvdream.json"
# MVDream's UNet in miniature: 2 levels (64, 128 channels), attention at the second (as SD's
# deepest levels), 64-channel heads as MVDream's, 8x8 latents (64 px), camera MLP of 16 inputs.
TINY_LDM_CONFIG = {
    "image_size": 8, "in_channels": 4, "out_channels": 4, "model_channels": 64, "channel_mult": [1, 2],
    "num_res_blocks": 1, "attention_resolutions": [2], "num_head_channels": 64, "context_dim": TINY_TEXT_WIDTH,
    "transformer_depth": 1, "use_linear_in_transformer": True, "camera_dim": 16,
}


def tiny_multiview_unet(seed: int = 0, num_frames: int = 4) -> MultiViewUNet2DConditionModel:
    """The tiny multi-view UNet with weights from ``seed`` (global RNG state restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = MultiViewUNet2DConditionModel(**diffusers_config(TINY_LDM_CONFIG, num_frames=num_frames))
        # diffusers zero-initialises conv_out and the camera MLP is random but tiny: give every
        # weight some size so that tests see the views, the camera and the text act.
        for p in unet.parameters():
            p.data.add_(torch.randn_like(p) * 0.05)
    return unet


def multiview_model_index(vae: bool = True) -> dict[str, object]:
    """``model_index.json`` content of a multi-view pipeline folder: SD's layout whose ``unet`` is
    our ``MultiViewUNet2DConditionModel`` (what ``mvdream.loader`` recognises a folder by);
    ``vae=False`` for a pixel-space one."""
    index = model_index(vae=vae)
    index["_class_name"] = "MVDreamPipeline"
    index["unet"] = ["a3d_mesh.guidance.mvdream", MultiViewUNet2DConditionModel.__name__]
    return index


def build_tiny_multiview_pipeline(path: Path, seed: int = 0) -> Path:
    """Build the tiny MVDream-like pipeline at ``path`` (written next to it, then renamed in).

    Returns:
        ``path``, holding ``model_index.json`` and ``unet`` (multi-view), ``vae``,
        ``text_encoder``, ``tokenizer`` and ``scheduler`` subfolders (a few MB).
    """
    return write_tiny_pipeline(path, seed, multiview_model_index(), (TINY_MV_MARKER, TINY_MV_FORMAT_VERSION), unet=tiny_multiview_unet(seed))


def tiny_multiview_dir() -> Path:
    """``$A3D_CACHE/models/tiny-mvdream`` (default cache root ``~/.cache/a3d-mesh``)."""
    return models_dir("tiny-mvdream")


def ensure_tiny_multiview_pipeline(path: Path | None = None) -> Path:
    """The cached tiny multi-view pipeline, built (seed 0) when missing or of an older format."""
    path = Path(path) if path is not None else tiny_multiview_dir()
    marker = path / TINY_MV_MARKER
    try:
        current = json.loads(marker.read_text(encoding="utf-8")).get("format") == TINY_MV_FORMAT_VERSION
    except (OSError, ValueError):
        current = False
    if not current:
        try:
            build_tiny_multiview_pipeline(path, seed=0)
        except OSError:
            if not marker.is_file():  # another process's build may have landed first
                raise
    return path
