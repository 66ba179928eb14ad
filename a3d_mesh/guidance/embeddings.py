"""Text embeddings of the prompt set, computed once per text, and their mixing by a simplex code.

For K prompts and V views (V = 1 without view-dependent prompting, see ``guidance.views``) the
text encoder runs once on every *distinct* text among the K x V prompt texts and the K x V
negative texts (the same negative for every view is encoded once); the results are kept (float32,
on the model's device) as tables ``[V, K, L, D]`` and the encoder is dropped, since SDS never
needs it again. A code ``u`` on the simplex mixes them per view as in A3D:
``tau(u, v) = sum_k u_k cond[v, k]`` and ``tau-(u, v) = sum_k u_k uncond[v, k]``.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from a3d_mesh.guidance.loader import SDComponents
from a3d_mesh.guidance.views import ViewPromptConfig, negative_texts, num_views, prompt_texts, view_index


@dataclass
class PromptEmbeddings:
    """Cached CLIP hidden states of the prompts and their negatives, per view.

    Attributes:
        cond_views: ``[V, K, L, D]`` float32, embedding of prompt k seen from view v (L = context
            length, e.g. 77). The constructor also takes the view-free ``[K, L, D]`` (V = 1).
        uncond_views: ``[V, K, L, D]`` float32, embedding of negative prompt k for view v (""
            gives the plain unconditional embedding).
        prompts: the K prompts, in code order.
        negatives: the K negative prompts.
        view_prompts: the rule that picks a camera's view (``None``: one view, V = 1).
    """

    cond_views: torch.Tensor
    uncond_views: torch.Tensor
    prompts: tuple[str, ...]
    negatives: tuple[str, ...]
    view_prompts: ViewPromptConfig | None = None

    def __post_init__(self) -> None:
        if self.cond_views.dim() == 3:  # the view-free form of old callers and checkpoints
            self.cond_views, self.uncond_views = self.cond_views.unsqueeze(0), self.uncond_views.unsqueeze(0)
        if self.cond_views.dim() != 4 or self.cond_views.shape != self.uncond_views.shape:
            raise ValueError(f"embedding tables {tuple(self.cond_views.shape)} and {tuple(self.uncond_views.shape)}"
                             " must both be [V, K, L, D]")
        expected = num_views(self.view_prompts)
        if self.cond_views.shape[0] != expected:
            raise ValueError(f"{self.cond_views.shape[0]} views in the tables, {expected} in the view rule")

    @property
    def num_prompts(self) -> int:
        return int(self.cond_views.shape[1])

    @property
    def num_views(self) -> int:
        """V: 1 without view-dependent prompting."""
        return int(self.cond_views.shape[0])

    @property
    def cond(self) -> torch.Tensor:
        """``[K, L, D]``: the prompts' embeddings when there is one view (V = 1)."""
        return self._single_view(self.cond_views)

    @property
    def uncond(self) -> torch.Tensor:
        """``[K, L, D]``: the negatives' embeddings when there is one view (V = 1)."""
        return self._single_view(self.uncond_views)

    def _single_view(self, table: torch.Tensor) -> torch.Tensor:
        if self.num_views != 1:
            raise ValueError(f"these embeddings have {self.num_views} views; use cond_views / uncond_views or mix")
        return table[0]

    def to(self, device: torch.device | str) -> PromptEmbeddings:
        """A copy on ``device``."""
        return PromptEmbeddings(self.cond_views.to(device), self.uncond_views.to(device), self.prompts,
                                self.negatives, self.view_prompts)

    def view_index(self, elevation: torch.Tensor, azimuth: torch.Tensor) -> torch.Tensor:
        """The view row of each camera, ``[B]`` int64 (elevation/azimuth ``[B]`` degrees, our frame)."""
        return view_index(self.view_prompts, elevation, azimuth)

    def mix(self, u: torch.Tensor, views: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of code ``u``: ``(tau(u, v), tau-(u, v))``.

        Args:
            u: ``[K]`` (one code) or ``[B, K]`` (a code per batch item), simplex weights.
            views: ``[B]`` int64 view of each batch item, or ``None`` for view 0 everywhere.

        Returns:
            Two float32 tensors: ``[L, D]`` for ``u`` of shape ``[K]`` and no ``views``, else
            ``[B, L, D]``.
        """
        if views is None:
            return mix_embeddings(self.cond_views[0], u), mix_embeddings(self.uncond_views[0], u)
        return mix_view_embeddings(self.cond_views, u, views), mix_view_embeddings(self.uncond_views, u, views)

    def state_dict(self) -> dict[str, object]:
        """Plain-data form for checkpoints (tensors ``[V, K, L, D]`` on CPU)."""
        return {
            "cond": self.cond_views.detach().cpu(),
            "uncond": self.uncond_views.detach().cpu(),
            "prompts": list(self.prompts),
            "negatives": list(self.negatives),
            "view_prompts": None if self.view_prompts is None else dataclasses.asdict(self.view_prompts),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, object]) -> PromptEmbeddings:
        """Inverse of ``state_dict`` (tensors stay on CPU; use ``.to``); also reads the older
        view-free form (``[K, L, D]`` tables, no ``view_prompts``)."""
        rule = state.get("view_prompts")
        return cls(
            torch.as_tensor(state["cond"], dtype=torch.float32),
            torch.as_tensor(state["uncond"], dtype=torch.float32),
            tuple(state["prompts"]),  # type: ignore[arg-type]
            tuple(state["negatives"]),  # type: ignore[arg-type]
            None if rule is None else ViewPromptConfig(**rule),  # type: ignore[arg-type]
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


def mix_view_embeddings(table: torch.Tensor, u: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    """Per-item convex combination in each item's view: ``out[b] = sum_k u[b, k] table[views[b], k]``.

    Args:
        table: ``[V, K, L, D]`` embeddings, one per view and prompt.
        u: ``[K]`` (shared by the batch) or ``[B, K]`` weights.
        views: ``[B]`` integer view indices in ``[0, V)``.

    Returns:
        ``[B, L, D]`` in ``table``'s dtype and device.
    """
    n_views, k = table.shape[:2]
    if views.dim() != 1:
        raise ValueError(f"views must be [B] indices, got shape {tuple(views.shape)}")
    if u.shape[-1] != k or u.dim() not in (1, 2) or (u.dim() == 2 and u.shape[0] != views.shape[0]):
        raise ValueError(f"code of shape {tuple(u.shape)} does not match {k} prompts and {views.shape[0]} views")
    # The range check reads the indices where they are (CPU for our cameras, so no device sync in
    # a training step), before they move to the table's device.
    if views.numel() and (int(views.min()) < 0 or int(views.max()) >= n_views):
        raise ValueError(f"view indices {views.tolist()} outside [0, {n_views})")
    views = views.to(device=table.device, dtype=torch.int64)
    weights = u.to(device=table.device, dtype=table.dtype).expand(views.shape[0], k)
    return torch.einsum("bk,bkld->bld", weights, table[views])


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


@dataclass(frozen=True)
class Truncation:
    """What ``tokenize`` cuts off one text.

    Attributes:
        tokens: the text's length in tokens, start and end tokens included.
        limit: the context length it is cut to (``tokenizer.model_max_length``).
        kept: the text the encoder sees, as the tokenizer decodes it.
        dropped: the cut-off rest, as decoded.
    """

    tokens: int
    limit: int
    kept: str
    dropped: str


def find_truncation(tokenizer: object, text: str) -> Truncation | None:
    """``None`` when ``text`` fits the tokenizer's context length, else what ``tokenize`` cuts.

    CLIP tokenizers add a start and an end token, and truncation keeps the start, the first
    ``L - 2`` text tokens and the end token, so the text tokens from ``L - 1`` on are lost.
    """
    limit = int(tokenizer.model_max_length)  # type: ignore[attr-defined]
    # verbose=False: transformers would log its own "sequence length is longer" line for this call.
    ids = tokenizer(text, truncation=False, verbose=False).input_ids  # type: ignore[operator]
    if len(ids) <= limit:
        return None
    decode = tokenizer.decode  # type: ignore[attr-defined]
    kept = decode(ids[: limit - 1], skip_special_tokens=True).strip()
    dropped = decode(ids[limit - 1 :], skip_special_tokens=True).strip()
    return Truncation(tokens=len(ids), limit=limit, kept=kept, dropped=dropped)


def _tail(text: str, words: int) -> str:
    parts = text.split()
    return text if len(parts) <= words else "... " + " ".join(parts[-words:])


def _ends(text: str, head: int, tail: int) -> str:
    """A long text shortened to its first and last words (the tail shows a lost view word)."""
    parts = text.split()
    return text if len(parts) <= head + tail else " ".join(parts[:head]) + " ... " + " ".join(parts[-tail:])


def truncation_warnings(tokenizer: object, names: Sequence[str], prompts: Sequence[str],
                        negatives: Sequence[str] = (), view_prompts: ViewPromptConfig | None = None) -> list[str]:
    """One warning line per asset whose encoded text the tokenizer cuts (empty list: none is cut).

    The texts checked are those ``encode_prompts`` encodes (view words included). A prompt's own
    texts are reported first; its negative only when the prompt itself fits.
    """
    negatives = list(negatives) or [""] * len(prompts)
    lines = []
    for name, prompt, negative in zip(names, prompts, negatives):
        for kind, given, texts in (("prompt", prompt, prompt_texts(view_prompts, prompt)),
                                   ("negative prompt", negative, negative_texts(view_prompts, negative))):
            cuts = [(t, c) for t in texts if (c := find_truncation(tokenizer, t)) is not None]
            if cuts:
                text, worst = max(cuts, key=lambda tc: tc[1].tokens)  # the longest view text loses the most
                words = " with its view word" if text != given else ""
                lines.append(f"[guidance] warning: the {kind} of '{name}' is {worst.tokens} tokens{words}, over the "
                             f"text encoder's {worst.limit}; it is cut after \"{_tail(worst.kept, 6)}\", dropping "
                             f"\"{_ends(worst.dropped, 6, 4)}\"")
                break
    return lines


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
    components: SDComponents, prompts: Sequence[str], negatives: Sequence[str] = (),
    view_prompts: ViewPromptConfig | None = None,
) -> PromptEmbeddings:
    """Embed every distinct prompt and negative text once, then free the text encoder.

    Args:
        components: loaded model parts (``text_encoder`` must still be present).
        prompts: K prompts; prompt k is object k (simplex corner e_k).
        negatives: K negative prompts (one per prompt, e.g. naming the other subjects), or an
            empty sequence for K empty negatives (the plain unconditional embedding).
        view_prompts: view-dependent prompting (``guidance.views``); ``None`` or disabled: the
            texts as given, V = 1.

    Returns:
        ``PromptEmbeddings`` with ``cond_views`` and ``uncond_views`` of shape ``[V, K, L, D]``
        float32.
    """
    prompts = tuple(prompts)
    negatives = tuple(negatives) if len(negatives) else ("",) * len(prompts)
    if not prompts:
        raise ValueError("at least one prompt is needed")
    if len(negatives) != len(prompts):
        raise ValueError(f"{len(negatives)} negative prompts for {len(prompts)} prompts; give one each")
    rule = view_prompts if view_prompts is not None and view_prompts.enabled else None
    # [K][V] texts, transposed below to the tables' [V, K] order.
    cond_texts = [prompt_texts(rule, p) for p in prompts]
    uncond_texts = [negative_texts(rule, n) for n in negatives]
    # One encoder pass over the distinct texts: each is encoded once (a negative shared by every
    # view, or "" shared by every prompt, is one row), with identical padding for all.
    unique = list(dict.fromkeys(t for rows in (cond_texts, uncond_texts) for row in rows for t in row))
    row_of = {t: i for i, t in enumerate(unique)}
    hidden = embed_texts(components, unique)
    v, k = num_views(rule), len(prompts)

    def table(texts: list[list[str]]) -> torch.Tensor:
        idx = torch.tensor([[row_of[texts[j][i]] for j in range(k)] for i in range(v)], device=hidden.device)
        return hidden[idx]  # [V, K, L, D], a copy (advanced indexing)

    embeddings = PromptEmbeddings(table(cond_texts), table(uncond_texts), prompts, negatives, rule)
    del hidden
    free_text_encoder(components)
    return embeddings
