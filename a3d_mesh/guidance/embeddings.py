"""Text embeddings of the prompt set, computed once, and their mixing by a simplex code.

For N prompts the text encoder runs once on the N prompts and once on their N negative prompts;
the results are kept (float32, on the model's device) and the encoder is dropped, since SDS never
needs it again. A code ``u`` on the simplex mixes them as in A3D:
``tau(u) = sum_k u_k cond_k`` and ``tau-(u) = sum_k u_k uncond_k``.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from a3d_mesh.guidance.loader import SDComponents


@dataclass
class PromptEmbeddings:
    """Cached CLIP hidden states of the prompts and their negatives.

    Attributes:
        cond: ``[K, L, D]`` float32, embedding of prompt k (L = context length, e.g. 77).
        uncond: ``[K, L, D]`` float32, embedding of negative prompt k ("" gives the plain
            unconditional embedding).
        prompts: the K prompts, in code order.
        negatives: the K negative prompts.
    """

    cond: torch.Tensor
    uncond: torch.Tensor
    prompts: tuple[str, ...]
    negatives: tuple[str, ...]

    @property
    def num_prompts(self) -> int:
        return int(self.cond.shape[0])

    def to(self, device: torch.device | str) -> PromptEmbeddings:
        """A copy on ``device``."""
        return PromptEmbeddings(self.cond.to(device), self.uncond.to(device), self.prompts, self.negatives)

    def mix(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of code ``u``: ``(tau(u), tau-(u))``.

        Args:
            u: ``[K]`` (one code) or ``[B, K]`` (a code per batch item), simplex weights.

        Returns:
            Two float32 tensors, ``[L, D]`` for ``u`` of shape ``[K]`` or ``[B, L, D]`` for ``[B, K]``.
        """
        return mix_embeddings(self.cond, u), mix_embeddings(self.uncond, u)

    def state_dict(self) -> dict[str, object]:
        """Plain-data form for checkpoints (tensors on CPU)."""
        return {
            "cond": self.cond.detach().cpu(),
            "uncond": self.uncond.detach().cpu(),
            "prompts": list(self.prompts),
            "negatives": list(self.negatives),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, object]) -> PromptEmbeddings:
        """Inverse of ``state_dict`` (tensors stay on CPU; use ``.to``)."""
        return cls(
            torch.as_tensor(state["cond"], dtype=torch.float32),
            torch.as_tensor(state["uncond"], dtype=torch.float32),
            tuple(state["prompts"]),  # type: ignore[arg-type]
            tuple(state["negatives"]),  # type: ignore[arg-type]
        )


def mix_embeddings(table: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Convex combination of per-prompt embeddings.

    Args:
        table: ``[K, L, D]`` embeddings, one per prompt.
        u: ``[K]`` or ``[B, K]`` weights (simplex codes; not renormalised here).

    Returns:
        ``[L, D]`` or ``[B, L, D]``, in ``table``'s dtype and device.
    """
    if u.shape[-1] != table.shape[0] or u.dim() not in (1, 2):
        raise ValueError(f"code of shape {tuple(u.shape)} does not match {table.shape[0]} prompts")
    weights = u.to(device=table.device, dtype=table.dtype)
    return torch.tensordot(weights, table, dims=([-1], [0]))


def tokenize(tokenizer: object, texts: Sequence[str]) -> torch.Tensor:
    """Token ids ``[n, L]`` int64, padded/truncated to the tokenizer's context length as SD does."""
    batch = tokenizer(  # type: ignore[operator]
        list(texts),
        padding="max_length",
        max_length=tokenizer.model_max_length,  # type: ignore[attr-defined]
        truncation=True,
        return_tensors="pt",
    )
    return batch.input_ids


@torch.no_grad()
def embed_texts(components: SDComponents, texts: Sequence[str]) -> torch.Tensor:
    """Last hidden states of the text encoder, ``[n, L, D]`` float32 on the model's device.

    SD pipelines condition on the final hidden state (SD 2.x checkpoints ship an encoder already
    cut to the penultimate layer), without an attention mask.
    """
    if components.text_encoder is None:
        raise RuntimeError("the text encoder was already freed; embed every prompt in one encode_prompts call")
    ids = tokenize(components.tokenizer, texts).to(components.device)
    hidden = components.text_encoder(ids)[0]
    return hidden.float()


def free_text_encoder(components: SDComponents) -> None:
    """Drop the text encoder from ``components`` and return its memory to the allocator."""
    components.text_encoder = None
    gc.collect()
    if components.device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


def encode_prompts(
    components: SDComponents, prompts: Sequence[str], negatives: Sequence[str] = ()
) -> PromptEmbeddings:
    """Embed every prompt and negative prompt once, then free the text encoder.

    Args:
        components: loaded model parts (``text_encoder`` must still be present).
        prompts: K prompts; prompt k is object k (simplex corner e_k).
        negatives: K negative prompts (one per prompt, e.g. naming the other subjects), or an
            empty sequence for K empty negatives (the plain unconditional embedding).

    Returns:
        ``PromptEmbeddings`` with ``cond`` and ``uncond`` of shape ``[K, L, D]`` float32.
    """
    prompts = tuple(prompts)
    negatives = tuple(negatives) if len(negatives) else ("",) * len(prompts)
    if not prompts:
        raise ValueError("at least one prompt is needed")
    if len(negatives) != len(prompts):
        raise ValueError(f"{len(negatives)} negative prompts for {len(prompts)} prompts; give one each")
    # One encoder pass for both lists: fewer kernel launches, and identical padding.
    hidden = embed_texts(components, prompts + negatives)
    k = len(prompts)
    embeddings = PromptEmbeddings(hidden[:k].clone(), hidden[k:].clone(), prompts, negatives)
    del hidden
    free_text_encoder(components)
    return embeddings
