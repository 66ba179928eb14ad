"""MVDream's multi-view UNet, built from diffusers' own ``UNet2DConditionModel``.

MVDream (Shi et al., 2023) is SD 2.1 base's UNet with two changes, both expressed here with
diffusers' building blocks so that the model saves and loads like any diffusers model:

- **Cross-view self-attention.** Every self-attention layer (``attn1`` of each transformer
  block) attends over the tokens of all ``num_frames`` views of a group at once: its input
  ``[(G*F), L, C]`` (G groups of F views, the views of a group consecutive in the batch) is seen
  as ``[G, F*L, C]``. ``MultiViewAttnProcessor`` does that around diffusers' SDPA processor; the
  cross-attention to the text (``attn2``) stays per view.
- **Camera embedding.** The view's camera (4x4 camera-to-world matrix in MVDream's frame, its
  translation normalised to unit length, flattened row-major to 16 values; see
  ``mvdream.cameras``) goes through ``Linear(16, D) -> SiLU -> Linear(D, D)`` (D = time
  embedding width) and is added to the timestep embedding. That is exactly diffusers'
  ``class_embed_type="projection"`` class embedding (a ``TimestepEmbedding``), so the camera is
  passed as ``class_labels``.

Call: ``unet(z_t [B,4,h,w], t [B], encoder_hidden_states [B,L,D], class_labels=camera [B,16])``
with B a multiple of ``num_frames``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

CAMERA_DIM = 16  # a flattened 4x4 matrix


class MultiViewAttnProcessor:
    """Self-attention across the ``num_frames`` views of each group (SDPA underneath).

    Input ``hidden_states`` ``[G*F, L, C]`` with the F views of a group consecutive; the layer
    attends over the ``F*L`` tokens of its group and returns ``[G*F, L, C]``. With F = 1 this is
    plain per-image self-attention. Cross-attention calls (``encoder_hidden_states`` given) are
    passed through per view.
    """

    def __init__(self, num_frames: int) -> None:
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.num_frames = num_frames
        self._plain = AttnProcessor2_0()

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 **kwargs: Any) -> torch.Tensor:
        if encoder_hidden_states is not None or self.num_frames == 1 or hidden_states.dim() != 3:
            return self._plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        batch, tokens, channels = hidden_states.shape
        if batch % self.num_frames:
            raise ValueError(f"a multi-view UNet takes views in groups of {self.num_frames}; got a batch of {batch}")
        grouped = hidden_states.reshape(batch // self.num_frames, self.num_frames * tokens, channels)
        out = self._plain(attn, grouped, None, attention_mask, temb)
        return out.reshape(batch, tokens, channels)


def set_multiview_attention(unet: UNet2DConditionModel, num_frames: int) -> None:
    """Install ``MultiViewAttnProcessor(num_frames)`` on every self-attention (``attn1``) layer and
    the plain SDPA processor on every other one (undoing e.g. attention slicing, which would
    attend per view)."""
    processors: dict[str, Any] = {}
    for name in unet.attn_processors:
        processors[name] = MultiViewAttnProcessor(num_frames) if name.endswith("attn1.processor") else AttnProcessor2_0()
    unet.set_attn_processor(processors)


# The fields MultiViewUNet2DConditionModel fixes to make the class embedding MVDream's camera MLP.
_CAMERA_FIELDS = {"class_embed_type": "projection", "projection_class_embeddings_input_dim": CAMERA_DIM}


def _init(self: "MultiViewUNet2DConditionModel", num_frames: int = 4, **kwargs: Any) -> None:
    """``UNet2DConditionModel(**kwargs)`` with a camera MLP as class embedding, multi-view attention."""
    if kwargs.get("class_embed_type", "projection") != "projection":
        raise ValueError("a multi-view UNet's class embedding is its camera MLP (class_embed_type='projection')")
    kwargs["class_embed_type"] = "projection"
    kwargs.setdefault("projection_class_embeddings_input_dim", CAMERA_DIM)
    UNet2DConditionModel.__init__(self, **kwargs)
    set_multiview_attention(self, num_frames)


def _signature() -> inspect.Signature:
    """``UNet2DConditionModel.__init__``'s parameters (keyword-only, camera defaults) plus
    ``num_frames``: diffusers reads a model's config fields from its ``__init__`` signature, so
    every field must appear there to be saved and passed back by ``from_pretrained``."""
    base = inspect.signature(UNet2DConditionModel.__init__).parameters
    params = [base["self"]]
    for name, p in base.items():
        if name != "self":
            p = p.replace(kind=inspect.Parameter.KEYWORD_ONLY, default=_CAMERA_FIELDS.get(name, p.default))
            params.append(p)
    params.append(inspect.Parameter("num_frames", inspect.Parameter.KEYWORD_ONLY, default=4, annotation=int))
    return inspect.Signature(params)


_init.__signature__ = _signature()  # type: ignore[attr-defined]


class MultiViewUNet2DConditionModel(UNet2DConditionModel):
    """``UNet2DConditionModel`` with MVDream's cross-view self-attention and camera embedding.

    Config: every ``UNet2DConditionModel`` field (``class_embed_type`` is ``"projection"`` and
    ``projection_class_embeddings_input_dim`` the camera width, 16) plus ``num_frames``, the views
    per group (4 for MVDream). Saved and loaded with ``save_pretrained`` / ``from_pretrained`` like
    any diffusers model (``config.json`` + safetensors); the attention processors are installed on
    construction. fp16 works as for SD (``torch_dtype=torch.float16`` on CUDA).

    Forward: as ``UNet2DConditionModel`` with ``class_labels`` = cameras ``[B, 16]`` (MVDream
    frame, ``mvdream.cameras``), B a multiple of ``num_frames``, each group's views consecutive.
    """

    __init__ = register_to_config(_init)

    @property
    def num_frames(self) -> int:
        """Views per group."""
        return int(self.config.num_frames)


def is_multiview_unet(unet: object) -> bool:
    """True for a :class:`MultiViewUNet2DConditionModel`."""
    return isinstance(unet, MultiViewUNet2DConditionModel)
