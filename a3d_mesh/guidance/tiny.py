"""A tiny, deterministic, random-weight Stable-Diffusion-like pipeline for tests and CPU smoke runs.

The pipeline has the same layout and the same shapes as SD 1.x/2.x, only narrower and shallower:

- ``vae``: ``AutoencoderKL`` with 4 latent channels and four encoder blocks, so one latent pixel
  covers 8x8 image pixels exactly as in SD (a 64 px image gives a ``[B, 4, 8, 8]`` latent);
- ``unet``: ``UNet2DConditionModel`` with two levels (32, 64 channels), cross-attention whose
  context width matches the text encoder's hidden size;
- ``text_encoder``: ``CLIPTextModel`` with 2 layers of width 32 and SD's 77-token context;
- ``tokenizer``: a byte-level BPE ``CLIPTokenizer`` whose ``vocab.json`` / ``merges.txt`` are
  generated here (no download is possible), covering every byte plus a few whole words;
- ``scheduler``: ``DDPMScheduler`` with SD's scaled-linear betas (the only part SDS needs is
  ``alphas_cumprod``).

Everything is written with ``save_pretrained`` next to a ``model_index.json`` so that the
folder loads through the very same diffusers/transformers ``from_pretrained`` calls as a real
checkpoint. Weights come from a seeded RNG, so two builds with one seed are byte-identical.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

# Bumping this invalidates cached tiny pipelines built by older code (see ``tiny_cache_dir``).
TINY_FORMAT_VERSION = 1
TINY_MARKER = "a3d_tiny.json"
TINY_TEXT_WIDTH = 32
TINY_MAX_LENGTH = 77
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
# Whole-word merges make the tokenizer behave like real BPE on the method's typical prompts.
TINY_WORDS = (
    "a", "an", "the", "of", "with", "and", "dog", "cat", "animal", "car", "carriage", "horse",
    "skeleton", "man", "robot", "standing", "chair", "table", "photo", "blurry", "low", "quality",
)


def byte_to_unicode_table() -> dict[int, str]:
    """Byte-level BPE alphabet: a printable unicode character for each of the 256 byte values.

    Printable Latin-1 bytes map to themselves; the remaining (control, space, ...) bytes map to
    code points 256, 257, ... in byte order, so every byte has a visible, whitespace-free symbol.
    This is the alphabet the CLIP/GPT-2 byte-level pre-tokenizer emits.
    """
    printable = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def tiny_vocab_and_merges(words: tuple[str, ...] = TINY_WORDS) -> tuple[dict[str, int], list[str]]:
    """CLIP-style vocabulary and merge list for the tiny tokenizer.

    The vocabulary holds every byte symbol, every byte symbol with the end-of-word marker
    ``</w>``, the left-to-right merge products of each word in ``words`` and the two special
    tokens (last, as in CLIP). Merges build each word one character at a time, e.g. ``d o``,
    ``do g</w>``, so an unknown word still tokenizes into byte symbols.

    Returns:
        (vocab token -> id, merges as ``"left right"`` strings in priority order).
    """
    symbols = list(byte_to_unicode_table().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    known = set(tokens)
    merges: list[str] = []
    for word in words:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        left = parts[0]
        for right in parts[1:]:
            merge = f"{left} {right}"
            left = left + right
            if left not in known:
                merges.append(merge)
                tokens.append(left)
                known.add(left)
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def write_tiny_tokenizer(folder: Path, words: tuple[str, ...] = TINY_WORDS,
                         max_length: int = TINY_MAX_LENGTH) -> int:
    """Write ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json`` for a CLIP tokenizer.

    ``words`` get whole-word merges (see ``tiny_vocab_and_merges``); ``max_length`` is the
    context length the tokenizer pads to (SD's 77 by default).

    Returns:
        The vocabulary size (the text encoder's embedding table must be at least this large).
    """
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = tiny_vocab_and_merges(words)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    # The first line of a CLIP merges file is a version header that loaders skip.
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return len(vocab)


def tiny_modules(vocab_size: int, eos_id: int, bos_id: int) -> dict[str, torch.nn.Module]:
    """The tiny ``unet``, ``vae`` and ``text_encoder``, initialised from the global torch RNG
    (``build_tiny_pipeline`` seeds it)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TINY_TEXT_WIDTH,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        # Four blocks = three 2x downsamplings: the same factor 8 as SD's VAE.
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )
    text_config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TINY_TEXT_WIDTH,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=TINY_MAX_LENGTH,
        projection_dim=TINY_TEXT_WIDTH,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    text_encoder = CLIPTextModel(text_config)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder}


def model_index(vae: bool = True) -> dict[str, object]:
    """``model_index.json`` content naming each component's library and class (SD layout);
    ``vae=False`` declares a pixel-space pipeline (``"vae": [null, null]``)."""
    import diffusers

    return {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"] if vae else [None, None],
    }


def build_tiny_pipeline(path: Path, seed: int = 0) -> Path:
    """Build the tiny random-weight SD-like pipeline and save it in diffusers layout at ``path``.

    The folder is first written to a sibling temporary folder and then renamed into place, so a
    crashed or concurrent build never leaves a half-written pipeline at ``path``; an existing
    folder at ``path`` is replaced. The global torch RNG state is restored afterwards.

    Args:
        path: destination folder (created; parents too).
        seed: weight-initialisation seed; one seed always gives byte-identical weights.

    Returns:
        ``path`` (as a ``Path``), holding ``model_index.json`` and the ``unet``, ``vae``,
        ``text_encoder``, ``tokenizer`` and ``scheduler`` subfolders (about 2 MB in all).
    """
    return write_tiny_pipeline(path, seed, model_index(), (TINY_MARKER, TINY_FORMAT_VERSION))


def write_tiny_pipeline(path: Path, seed: int, index: dict[str, Any], marker: tuple[str, int],
                        unet: Any = None) -> Path:
    """Write a tiny pipeline (this module's parts from ``seed``; ``unet`` replaces its UNet) with
    ``index`` as ``model_index.json`` and ``marker`` = (file name, format version) dating the build,
    staged next to ``path`` and renamed into place."""
    from diffusers import DDPMScheduler

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        vocab_size = write_tiny_tokenizer(staging / "tokenizer")
        vocab, _ = tiny_vocab_and_merges()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            modules = tiny_modules(vocab_size, eos_id=vocab[EOS_TOKEN], bos_id=vocab[BOS_TOKEN])
        if unet is not None:
            modules["unet"] = unet
        for name, module in modules.items():
            module.save_pretrained(staging / name)
        scheduler = DDPMScheduler(
            num_train_timesteps=1000,
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            prediction_type="epsilon",
            steps_offset=1,
        )
        scheduler.save_pretrained(staging / "scheduler")
        (staging / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
        # A marker of our own (not in model_index.json, which diffusers validates) dates the build.
        (staging / marker[0]).write_text(json.dumps({"format": marker[1], "seed": seed}))
        if path.exists():
            shutil.rmtree(path)
        os.replace(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return path


def models_dir(name: str) -> Path:
    """Folder of a model the project builds itself: ``$A3D_CACHE/models/<name>`` (default cache
    root ``~/.cache/a3d-mesh``)."""
    root = os.environ.get("A3D_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "a3d-mesh")
    return Path(root) / "models" / name


def tiny_cache_dir() -> Path:
    """Folder of the cached tiny pipeline: ``$A3D_CACHE/models/tiny-sd``."""
    return models_dir("tiny-sd")


def is_current_tiny(path: Path) -> bool:
    """True when ``path`` holds a complete tiny pipeline of the current format version."""
    path = Path(path)
    marker = path / TINY_MARKER
    if not (marker.is_file() and (path / "model_index.json").is_file()):
        return False
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return data.get("format") == TINY_FORMAT_VERSION


def ensure_tiny_pipeline(path: Path | None = None) -> Path:
    """Return the cached tiny pipeline folder, building it (seed 0) when missing or outdated."""
    path = Path(path) if path is not None else tiny_cache_dir()
    if not is_current_tiny(path):
        try:
            build_tiny_pipeline(path, seed=0)
        except OSError:
            # Another process may have renamed its own build into place first; that one is fine.
            if not is_current_tiny(path):
                raise
    return path
