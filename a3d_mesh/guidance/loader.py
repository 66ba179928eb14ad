"""Loading the parts of a Stable-Diffusion-family model that SDS needs.

``load_components(model, device)`` accepts three kinds of ``model``:

- a Hugging Face hub id (``"stabilityai/stable-diffusion-2-1-base"``, the default prior);
- a local folder in diffusers layout (it holds ``model_index.json`` and the ``unet``, ``vae``,
  ``text_encoder``, ``tokenizer``, ``scheduler`` subfolders);
- ``"toy"``: the toy-world prior shipped in the package (``a3d_mesh/toy/assets/toy-prior``,
  trained by ``python -m a3d_mesh.toy.train``): a pixel-space model, i.e. a folder whose
  ``model_index.json`` names no ``vae`` (``[null, null]``); SDS then runs on RGB directly;
- ``"tiny"``: the project's random-weight test pipeline (``guidance.tiny``), built on first use in
  ``$A3D_CACHE/models/tiny-sd`` (default ``~/.cache/a3d-mesh/models/tiny-sd``) and then loaded
  through the same ``from_pretrained`` calls as a real checkpoint.

Network policy: a hub id is first looked up in the local cache (no network). Only when it is not
cached, the hub host is probed with a short TCP connect (a few seconds at most, also when DNS
hangs) before any download; ``HF_HUB_OFFLINE=1`` (read at call time) or
``local_files_only=True`` skips the network entirely. Any failure to find or read a model raises
``GuidanceModelError`` with a one-line message that says how to get the model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from a3d_mesh.guidance.tiny import ensure_tiny_pipeline

DEFAULT_MODEL = "stabilityai/stable-diffusion-2-1-base"
TINY_MODEL = "tiny"
TOY_MODEL = "toy"
HUB_PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "on", "yes", "true"}


class GuidanceModelError(Exception):
    """A diffusion model could not be found or loaded; the message is one user-facing line."""


@dataclass
class SDComponents:
    """The parts of an SD-family pipeline used for guidance.

    Attributes:
        tokenizer: ``CLIPTokenizer``; ``tokenizer.model_max_length`` is the context length L.
        text_encoder: ``CLIPTextModel`` giving ``[K, L, D]`` hidden states; set to ``None`` by
            ``encode_prompts`` once every prompt is embedded, to release its memory.
        unet: ``UNet2DConditionModel`` (eval mode, frozen), predicting epsilon or v.
        vae: ``AutoencoderKL`` (eval mode, frozen); images ``[B,3,H,W]`` in ``[-1, 1]`` map to
            latents ``[B,4,H/8,W/8]`` (times ``vae.config.scaling_factor``). ``None`` for a
            pixel-space model, whose UNet denoises ``[B,3,H,W]`` images in ``[-1, 1]`` directly.
        scheduler: a diffusers scheduler with ``alphas_cumprod`` ``[T]`` (float32) and
            ``config.num_train_timesteps`` / ``config.prediction_type``.
        model_id: what the caller asked for (hub id, folder, ``"toy"`` or ``"tiny"``).
        dtype: dtype of the networks (float16 on CUDA by default, float32 on CPU).
        device: device of the networks.
    """

    tokenizer: Any
    text_encoder: Any | None
    unet: torch.nn.Module
    vae: torch.nn.Module | None
    scheduler: Any
    model_id: str
    dtype: torch.dtype
    device: torch.device


def resolve_dtype(device: torch.device | str, dtype: torch.dtype | None = None) -> torch.dtype:
    """The networks' dtype: ``dtype`` when given, else float16 on CUDA and float32 elsewhere
    (half precision on CPU is slow and poorly supported by conv/attention kernels)."""
    if dtype is not None:
        return dtype
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


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


def _download_hint(model: str) -> str:
    return (
        f"download it on a connected machine with `hf download {model}` "
        "(or set HF_HOME to a cache that has it / pass a local folder)"
    )


def _is_cached(repo_id: str) -> bool:
    """True when the hub cache holds this repo's ``model_index.json`` (no network access)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "model_index.json"), str)
    except Exception:  # noqa: BLE001 - a malformed id is reported later, by the id check
        return False


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or "\\" in model or model.count("/") > 1


def bundled_toy_prior() -> Path:
    """Folder of the toy-world prior shipped inside the package (it may be absent in a checkout
    that has not trained it yet)."""
    return Path(str(resources.files("a3d_mesh.toy"))) / "assets" / "toy-prior"


def has_vae(source: str) -> bool:
    """False when the local pipeline folder ``source`` declares no VAE (a pixel-space model).

    Hub ids are SD-family latent models and always have one."""
    index = Path(source) / "model_index.json"
    if not index.is_file():
        return True
    try:
        entry = json.loads(index.read_text(encoding="utf-8")).get("vae")
    except (OSError, ValueError):
        return True
    return bool(entry) and entry[0] is not None


def resolve_source(model: str, local_files_only: bool | None) -> tuple[str, bool]:
    """Where to load ``model`` from, and whether loading must stay offline.

    Returns:
        (a local folder or hub id for ``from_pretrained``, local_files_only flag).

    Raises:
        GuidanceModelError: missing folder, folder without ``model_index.json``, malformed hub
            id, or a hub id that is neither cached nor downloadable right now.
    """
    if model == TINY_MODEL:
        try:
            return str(ensure_tiny_pipeline()), True
        except OSError as exc:
            raise GuidanceModelError(
                f"could not build the tiny test model in the cache ({_first_line(exc)}); "
                "set A3D_CACHE to a writable folder"
            ) from exc
    if model == TOY_MODEL:
        folder = bundled_toy_prior()
        if not (folder / "model_index.json").is_file():
            raise GuidanceModelError(
                f"the toy prior is not in this installation ({folder}); train it with "
                "`python -m a3d_mesh.toy.train --out runs/toy-prior` and pass guidance.model=runs/toy-prior/prior"
            )
        return str(folder), True
    folder = Path(model).expanduser()
    if folder.is_dir():
        if not (folder / "model_index.json").is_file():
            raise GuidanceModelError(
                f"folder '{model}' is not a diffusers pipeline (no model_index.json); "
                "pass a folder saved with save_pretrained, a hub id, or 'tiny'"
            )
        return str(folder), True
    if _looks_like_path(model) or folder.exists():
        raise GuidanceModelError(
            f"model folder '{model}' does not exist; pass an existing diffusers folder or a hub id"
        )
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError:
        raise GuidanceModelError(
            f"'{model}' is neither an existing folder nor a valid Hugging Face hub id (owner/name)"
        ) from None
    if local_files_only is not None:
        return model, local_files_only
    if hub_offline_from_env() or _is_cached(model):
        return model, True
    if not hub_reachable():
        raise GuidanceModelError(
            f"model '{model}' is not in the local Hugging Face cache and the hub cannot be reached; "
            + _download_hint(model)
        )
    return model, False


def _text_dtype_kwarg(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """transformers >= 5 names the load dtype ``dtype``; older releases ``torch_dtype``."""
    import transformers

    major = int(transformers.__version__.split(".")[0])
    return {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}


def _from_pretrained(source: str, dtype: torch.dtype, local_only: bool) -> dict[str, Any]:
    """Load the five parts of the pipeline at ``source`` (folder or hub id), one subfolder each."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    # Their per-load progress bars would interleave with our own progress lines.
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    common: dict[str, Any] = {"local_files_only": local_only}
    # Without accelerate, diffusers falls back to a normal load anyway; saying so avoids its warning.
    low_mem = {"low_cpu_mem_usage": importlib.util.find_spec("accelerate") is not None}
    vae = (AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **low_mem, **common)
           if has_vae(source) else None)
    return {
        "tokenizer": CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **common),
        "text_encoder": CLIPTextModel.from_pretrained(
            source, subfolder="text_encoder", **_text_dtype_kwarg(dtype), **common
        ),
        "unet": UNet2DConditionModel.from_pretrained(
            source, subfolder="unet", torch_dtype=dtype, **low_mem, **common
        ),
        "vae": vae,
        # DDPMScheduler reads any SD scheduler config (PNDM, DDIM, ...): SDS only needs the betas.
        "scheduler": DDPMScheduler.from_pretrained(source, subfolder="scheduler", **common),
    }


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _load_or_raise(
    model: str, source: str, dtype: torch.dtype, local_only: bool, may_retry_online: bool
) -> dict[str, Any]:
    """``_from_pretrained`` with every failure turned into a one-line ``GuidanceModelError``.

    A hub id found in the cache is loaded offline first; if the cache turns out incomplete
    (``may_retry_online``, not offline by env, hub reachable) the load is retried with downloads.
    """
    try:
        return _from_pretrained(source, dtype, local_only)
    except Exception as exc:  # noqa: BLE001 - every loader failure becomes one actionable line
        is_hub_id = not Path(source).is_dir()
        if not (local_only and is_hub_id):
            raise GuidanceModelError(f"could not load model '{model}': {_first_line(exc)}") from exc
        if may_retry_online and not hub_offline_from_env() and hub_reachable():
            try:
                return _from_pretrained(source, dtype, False)
            except Exception as retry_exc:  # noqa: BLE001
                raise GuidanceModelError(f"could not load model '{model}': {_first_line(retry_exc)}") from retry_exc
        raise GuidanceModelError(
            f"model '{model}' is not (completely) in the local Hugging Face cache and downloads are off or the "
            f"hub cannot be reached; {_download_hint(model)}"
        ) from exc


def load_components(
    model: str = DEFAULT_MODEL,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    local_files_only: bool | None = None,
) -> SDComponents:
    """Load tokenizer, text encoder, UNet, VAE and scheduler of an SD-family model.

    Args:
        model: hub id, local diffusers folder, ``"toy"`` or ``"tiny"`` (see the module docstring).
        device: where the networks go.
        dtype: network dtype; ``None`` = float16 on CUDA, float32 elsewhere.
        local_files_only: ``True`` never touches the network, ``False`` lets diffusers download,
            ``None`` (default) uses the cache when it can and probes the hub before downloading.

    Returns:
        ``SDComponents`` with every network in eval mode and ``requires_grad=False`` (gradients
        still flow through the VAE encoder to its input).

    Raises:
        GuidanceModelError: the model cannot be found or read (one-line message).
    """
    device = torch.device(device)
    net_dtype = resolve_dtype(device, dtype)
    source, local_only = resolve_source(model, local_files_only)
    parts = _load_or_raise(model, source, net_dtype, local_only, may_retry_online=local_files_only is None)
    for name in ("text_encoder", "unet", "vae"):
        if parts[name] is None:  # a pixel-space model has no VAE
            continue
        net = parts[name].to(device)
        net.eval()
        net.requires_grad_(False)
        parts[name] = net
    return SDComponents(model_id=model, dtype=net_dtype, device=device, **parts)
