"""MVDream weights in the original (LDM) layout -> :class:`MultiViewUNet2DConditionModel`.

Two sources hold MVDream's UNet in the layout of its own code (``MultiViewUNetModel``, the LDM
``openaimodel`` UNet): the original single-file checkpoint (``sd-v2.1-base-4view.pt``: the whole
latent-diffusion model, UNet keys under ``model.diffusion_model.``) and diffusers-layout ports such
as ``ashawkey/mvdream-sd2.1-diffusers``, whose ``unet/`` folder holds the same keys without the
prefix next to a ``config.json`` of LDM parameters (``model_channels``, ``channel_mult``, ...).

Both go through one table: :func:`ldm_key_map` gives, for a diffusers UNet config, the LDM name of
every parameter of :class:`MultiViewUNet2DConditionModel` (resnets ``in_layers``/``out_layers``,
``input_blocks.N`` numbering, ``camera_embed.0/2`` for the camera MLP, ...). A conversion must use
every LDM key and fill every parameter; anything else means another architecture and is refused
with a one-line :class:`MVDreamWeightsError`. Files are read with ``safetensors`` or
``torch.load(weights_only=True)``: no arbitrary objects are ever unpickled.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from a3d_mesh.errors import first_line
from a3d_mesh.guidance.loader import ModelInputError, ModelKindError
from a3d_mesh.guidance.mvdream.unet import CAMERA_DIM, MultiViewUNet2DConditionModel

LDM_PREFIX = "model.diffusion_model."
# MVDream's attention heads are 64 channels wide (its sd-v2-base config); the weights cannot say.
DEFAULT_HEAD_CHANNELS = 64
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


class MVDreamWeightsError(ModelInputError):
    """An MVDream checkpoint or port that cannot be read or does not fit (bad input, exit 2)."""


class MVDreamKindError(ModelKindError):
    """Weights of another architecture given as an MVDream checkpoint (bad input, exit 2)."""


def diffusers_config(ldm: Mapping[str, Any], num_frames: int = 4) -> dict[str, Any]:
    """The :class:`MultiViewUNet2DConditionModel` config for LDM UNet parameters.

    ``ldm``: ``MultiViewUNetModel`` parameters as in MVDream's ``sd-v2-base.yaml`` /
    a port's ``unet/config.json`` (``model_channels``, ``channel_mult``, ``num_res_blocks``,
    ``attention_resolutions``, ``num_head_channels`` or ``num_heads``, ``context_dim``,
    ``transformer_depth``, ``use_linear_in_transformer``, ``camera_dim``, ``image_size``).
    Level i (downsampling factor 2**i) has attention when 2**i is in ``attention_resolutions``.
    """
    try:
        width, mult = int(ldm["model_channels"]), [int(m) for m in ldm["channel_mult"]]
        blocks, attn = ldm["num_res_blocks"], {int(a) for a in ldm["attention_resolutions"]}
        context = int(ldm["context_dim"])
    except (KeyError, TypeError, ValueError) as exc:
        raise MVDreamKindError(f"not an MVDream UNet config (missing or bad {first_line(str(exc))})") from None
    if not isinstance(blocks, int):
        raise MVDreamKindError("per-level num_res_blocks lists are not an MVDream UNet")
    channels = [width * m for m in mult]
    has_attn = [2**i in attn for i in range(len(mult))]
    head_ch = int(ldm.get("num_head_channels", -1))
    heads = [c // head_ch for c in channels] if head_ch > 0 else [int(ldm["num_heads"])] * len(channels)
    return {
        "sample_size": int(ldm.get("image_size", 32)),
        "in_channels": int(ldm.get("in_channels", 4)),
        "out_channels": int(ldm.get("out_channels", 4)),
        "block_out_channels": channels,
        "layers_per_block": blocks,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in has_attn],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(has_attn)],
        "cross_attention_dim": context,
        "attention_head_dim": heads,  # diffusers' name for the number of heads (a legacy misnomer)
        "use_linear_projection": bool(ldm.get("use_linear_in_transformer", False)),
        "transformer_layers_per_block": int(ldm.get("transformer_depth", 1)),
        "norm_num_groups": 32,  # LDM's GroupNorm32
        "projection_class_embeddings_input_dim": int(ldm.get("camera_dim", CAMERA_DIM)),
        "num_frames": num_frames,
    }


def _ldm_name(key: str, layers: int, up_attention: list[bool]) -> str:
    """LDM name of one diffusers parameter name (layers = resnets per down block)."""
    parts = key.split(".")
    step = layers + 1

    def resnet(rest: list[str]) -> str:
        return ".".join([_RESNET[rest[0]], *rest[1:]])

    head = parts[0]
    if head in ("time_embedding", "class_embedding"):
        base = "time_embed" if head == "time_embedding" else "camera_embed"
        return f"{base}.{ {'linear_1': 0, 'linear_2': 2}[parts[1]] }.{parts[2]}"
    if head == "conv_in":
        return f"input_blocks.0.0.{parts[1]}"
    if head in ("conv_norm_out", "conv_out"):
        return f"out.{0 if head == 'conv_norm_out' else 2}.{parts[1]}"
    if head == "mid_block":
        index = {("resnets", "0"): 0, ("attentions", "0"): 1, ("resnets", "1"): 2}[(parts[1], parts[2])]
        rest = parts[3:]
        return f"middle_block.{index}." + (resnet(rest) if parts[1] == "resnets" else ".".join(rest))
    level, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
    if head == "down_blocks":
        if kind == "downsamplers":  # rest = conv.{weight,bias}
            return f"input_blocks.{1 + level * step + layers}.0.op.{rest[-1]}"
        block = 1 + level * step + j
        return f"input_blocks.{block}." + ("0." + resnet(rest) if kind == "resnets" else "1." + ".".join(rest))
    if head == "up_blocks":
        if kind == "upsamplers":  # after the resnet (and attention) of the level's last block
            return f"output_blocks.{level * step + layers}.{2 if up_attention[level] else 1}.conv.{rest[-1]}"
        block = level * step + j
        return f"output_blocks.{block}." + ("0." + resnet(rest) if kind == "resnets" else "1." + ".".join(rest))
    raise KeyError(key)


def ldm_key_map(unet: MultiViewUNet2DConditionModel) -> dict[str, str]:
    """``{diffusers name: LDM name}`` for every parameter and buffer of ``unet``."""
    cfg = unet.config
    up_attention = [t.startswith("CrossAttn") for t in cfg.up_block_types]
    return {k: _ldm_name(k, int(cfg.layers_per_block), up_attention) for k in unet.state_dict()}


def to_ldm_state_dict(unet: MultiViewUNet2DConditionModel, prefix: str = LDM_PREFIX) -> dict[str, torch.Tensor]:
    """``unet``'s weights in the original layout (the inverse of :func:`load_ldm_weights`): what
    MVDream's own code loads, and how the tests build original-layout checkpoints."""
    state = unet.state_dict()
    return {prefix + ldm: state[ours].detach().clone() for ours, ldm in ldm_key_map(unet).items()}


def load_ldm_weights(unet: MultiViewUNet2DConditionModel, ldm_state: Mapping[str, torch.Tensor], name: str) -> None:
    """Fill ``unet`` from an LDM-layout UNet state dict (keys without ``model.diffusion_model.``).

    Raises:
        MVDreamKindError: a key this architecture has no place for, a parameter with no key, or a
            shape that differs: the weights are of another model.
    """
    mapping = ldm_key_map(unet)
    wanted = set(mapping.values())
    extra = sorted(set(ldm_state) - wanted)
    missing = sorted(wanted - set(ldm_state))
    if extra or missing:
        what = f"unexpected weight '{extra[0]}'" if extra else f"no weight '{missing[0]}'"
        count = len(extra) + len(missing) - 1
        raise MVDreamKindError(f"'{name}' does not fit the MVDream UNet its config describes: {what}"
                               + (f" ({count} more mismatches)" if count else ""))
    ours = {k: ldm_state[v] for k, v in mapping.items()}
    shapes = unet.state_dict()
    for key, tensor in ours.items():
        if tuple(tensor.shape) != tuple(shapes[key].shape):
            raise MVDreamKindError(f"'{name}' does not fit the MVDream UNet: {mapping[key]} has shape "
                                   f"{tuple(tensor.shape)}, expected {tuple(shapes[key].shape)}")
    unet.load_state_dict(ours, strict=True)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a ``torch.save`` file (weights only, memory-mapped);
    a Lightning-style ``{"state_dict": {...}}`` wrapper is unwrapped.

    Raises:
        MVDreamWeightsError: unreadable, truncated, or holding objects other than tensors.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:  # weights_only refused a pickled object: never run such code
        raise MVDreamWeightsError(f"MVDream checkpoint '{path}' holds Python objects besides tensors; only "
                                  "weights are read (re-save it as a state dict or .safetensors)") from None
    except Exception as exc:  # noqa: BLE001 - truncated zips, bad headers, ... -> one line
        # The libraries' first sentence says what is wrong; the rest is advice for their own API.
        reason = first_line(exc).split(". ")[0]
        raise MVDreamWeightsError(f"cannot read MVDream checkpoint '{path}' (truncated or damaged?): {reason}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MVDreamWeightsError(f"'{path}' is not a state dict of tensors")
    return state


def infer_ldm_config(state: Mapping[str, torch.Tensor], name: str,
                     head_channels: int = DEFAULT_HEAD_CHANNELS) -> dict[str, Any]:
    """LDM UNet parameters read off an LDM-layout UNet state dict (no prefix), for a single-file
    checkpoint that comes without its config. Only the head width is assumed (64, MVDream's).

    Raises:
        MVDreamKindError: no camera MLP (a plain SD checkpoint) or no LDM UNet at all.
    """
    if "input_blocks.0.0.weight" not in state or "out.2.weight" not in state:
        raise MVDreamKindError(f"'{name}' holds no LDM UNet (no model.diffusion_model.input_blocks.*); "
                               "pass an MVDream checkpoint such as sd-v2.1-base-4view.pt")
    if "camera_embed.0.weight" not in state:
        raise MVDreamKindError(f"'{name}' is a UNet without a camera embedding (camera_embed.*), not a multi-view "
                               "MVDream model; a plain Stable Diffusion model goes in as a diffusers folder or hub id")
    conv_in = state["input_blocks.0.0.weight"]
    width = int(conv_in.shape[0])
    downs = sorted(int(k.split(".")[1]) for k in state if k.startswith("input_blocks.") and ".op.weight" in k)
    blocks = (downs[0] - 1) if downs else len({k.split(".")[1] for k in state if k.startswith("input_blocks.")}) - 2
    levels = len(downs) + 1
    step = blocks + 1
    mult, attention = [], []
    for i in range(levels):
        first = 1 + i * step
        out = state.get(f"input_blocks.{first}.0.out_layers.3.weight")
        if out is None:
            raise MVDreamKindError(f"'{name}' is not an LDM UNet MVDream can be (no input_blocks.{first}.0 resnet)")
        mult.append(int(out.shape[0]) // width)
        if f"input_blocks.{first}.1.proj_in.weight" in state:
            attention.append(2**i)
    proj_in = state.get("middle_block.1.proj_in.weight")
    context = state.get("middle_block.1.transformer_blocks.0.attn2.to_k.weight")
    if proj_in is None or context is None:
        raise MVDreamKindError(f"'{name}' has no text cross-attention in its middle block; not an MVDream UNet")
    depth = len({k.split("transformer_blocks.")[1].split(".")[0]
                 for k in state if k.startswith("middle_block.1.transformer_blocks.")})
    return {"image_size": 32, "in_channels": int(conv_in.shape[1]), "out_channels": int(state["out.2.weight"].shape[0]),
            "model_channels": width, "channel_mult": mult, "num_res_blocks": blocks,
            "attention_resolutions": attention, "num_head_channels": head_channels,
            "context_dim": int(context.shape[1]), "transformer_depth": depth,
            "use_linear_in_transformer": proj_in.dim() == 2,
            "camera_dim": int(state["camera_embed.0.weight"].shape[1])}


def unet_from_ldm(state: Mapping[str, torch.Tensor], ldm_config: Mapping[str, Any], name: str,
                  dtype: torch.dtype = torch.float32) -> MultiViewUNet2DConditionModel:
    """Build the UNet of ``ldm_config`` and fill it from the LDM-layout ``state`` (no prefix)."""
    with torch.device("meta"):  # no random init of weights that are overwritten at once
        unet = MultiViewUNet2DConditionModel(**diffusers_config(ldm_config))
    unet.to_empty(device="cpu")
    load_ldm_weights(unet, state, name)
    # nn.Module.to: diffusers' own .to warns about casting a model it did not load itself.
    return unet if dtype == torch.float32 else torch.nn.Module.to(unet, dtype=dtype)


def load_single_file_unet(path: Path, dtype: torch.dtype = torch.float32,
                          head_channels: int = DEFAULT_HEAD_CHANNELS) -> MultiViewUNet2DConditionModel:
    """The UNet of an original MVDream checkpoint (``.pt``/``.ckpt``/``.safetensors``): keys
    ``model.diffusion_model.*`` (the VAE's ``first_stage_model.*`` and the text encoder's
    ``cond_stage_model.*`` are ignored; SD 2.1 base's are used, which MVDream kept frozen)."""
    state = read_state_dict(path)
    unet_state = {k[len(LDM_PREFIX):]: v for k, v in state.items() if k.startswith(LDM_PREFIX)}
    if not unet_state:  # a bare UNet state dict (no LDM wrapper) is accepted as well
        unet_state = {k: v for k, v in state.items() if not k.startswith(("first_stage_model.", "cond_stage_model."))}
    return unet_from_ldm(unet_state, infer_ldm_config(unet_state, str(path), head_channels), str(path), dtype)


def load_port_unet(folder: Path, dtype: torch.dtype = torch.float32) -> MultiViewUNet2DConditionModel:
    """The UNet of a port's ``unet/`` folder (``config.json`` of LDM parameters + weights in
    ``diffusion_pytorch_model.safetensors`` or ``.bin``), as written by ashawkey/mvdream_diffusers."""
    import json

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MVDreamWeightsError(f"cannot read {folder / 'config.json'}: {first_line(exc)}") from None
    files = [folder / f"diffusion_pytorch_model.{ext}" for ext in ("safetensors", "bin")]
    weights = next((f for f in files if f.is_file()), None)
    if weights is None:
        raise MVDreamWeightsError(f"'{folder}' has no UNet weights (diffusion_pytorch_model.safetensors or .bin)")
    return unet_from_ldm(read_state_dict(weights), config, str(folder), dtype)
