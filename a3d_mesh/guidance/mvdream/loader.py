"""Loading an MVDream (multi-view) prior into ``SDComponents``.

``guidance.model`` names a multi-view prior when it is (``multiview_source`` decides, from file
names and JSON configs only):

- ``"tiny-mvdream"``: the random-weight test pipeline (``mvdream.tiny``), built in the cache;
- ``"toy"``: the bundled toy-world prior (``a3d_mesh.toy``), a pixel-space multi-view model (no
  VAE: ``model_index.json`` names it ``[null, null]``);
- ``"mvdream-sd2.1"``: MVDream's SD 2.1 base 4-view model from the local Hugging Face cache: the
  diffusers port ``ashawkey/mvdream-sd2.1-diffusers`` if cached, else the original
  ``sd-v2.1-base-4view.pt`` of ``MVDream/MVDream``; when neither is cached and downloads are
  allowed, the port is downloaded;
- a ``.pt`` / ``.pth`` / ``.ckpt`` / ``.bin`` / ``.safetensors`` file: an original-layout
  checkpoint (UNet under ``model.diffusion_model.``, with ``camera_embed.*``); its tokenizer,
  text encoder, VAE and scheduler come from ``base_model`` (SD 2.1 base by default, through the
  usual sources), which MVDream kept frozen;
- a folder whose ``unet/config.json`` is a multi-view UNet: our layout
  (``MultiViewUNet2DConditionModel``, saved with ``save_pretrained``) or a port's
  (``MultiViewUNetModel``: LDM keys and parameters, converted on load);
- a hub id of such a folder: recognised from its configs in the local cache (the SD loader
  fetches them for an uncached id and hands a multi-view one over here), then the whole snapshot
  is taken from the cache or downloaded when allowed.

Every failure is one line: ``MVDreamWeightsError`` / ``MVDreamKindError`` (bad input, exit 2)
for a missing or foreign file, a truncated checkpoint, a folder missing a part;
``GuidanceModelError`` (exit 1) when a part fails to load for another reason.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import torch

from a3d_mesh.errors import first_line
from a3d_mesh.guidance import sources
from a3d_mesh.guidance import loader as sd_loader
from a3d_mesh.guidance.loader import (DEFAULT_MODEL, TOY_MODEL, GuidanceModelError, SDComponents, _text_dtype_kwarg,
                                      has_vae, resolve_dtype, resolve_source)
from a3d_mesh.guidance.mvdream.convert import (CHECKPOINT_SUFFIXES, MVDreamKindError, MVDreamWeightsError,
                                               load_port_unet, load_single_file_unet)
from a3d_mesh.guidance.mvdream.tiny import ensure_tiny_multiview_pipeline
from a3d_mesh.guidance.mvdream.unet import MultiViewUNet2DConditionModel

TINY_MULTIVIEW = "tiny-mvdream"
MVDREAM_PRIOR = "mvdream-sd2.1"
MVDREAM_PORT = "ashawkey/mvdream-sd2.1-diffusers"
MVDREAM_REPO, MVDREAM_FILE = "MVDream/MVDream", "sd-v2.1-base-4view.pt"
OUR_UNET, PORT_UNET = "MultiViewUNet2DConditionModel", "MultiViewUNetModel"
_PARTS = {"unet": "unet/config.json", "text_encoder": "text_encoder/config.json", "tokenizer": "tokenizer",
          "vae": "vae/config.json", "scheduler": "scheduler/scheduler_config.json"}


def _unet_class(folder: Path) -> str | None:
    try:
        data = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("_class_name") if isinstance(data, dict) else None


def _is_multiview_folder(folder: Path) -> bool:
    if _unet_class(folder) in (OUR_UNET, PORT_UNET):
        return True
    try:  # a port folder whose unet/ is missing still says what it is in model_index.json
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(index, dict) and "MVDream" in str(index.get("_class_name", ""))


def multiview_source(model: str) -> tuple[str, Path | str] | None:
    """``(kind, where)`` when ``model`` names a multi-view prior, else None (an SD-family model).

    kind: ``"file"`` (an original checkpoint path, existing or not: a missing one is reported by
    the load), ``"folder"`` (a local folder), ``"hub"`` (a hub id whose cached configs say
    multi-view), ``"tiny"`` or ``"prior"``. No network.
    """
    if model == TINY_MULTIVIEW:
        return "tiny", model
    if model == TOY_MODEL:  # a missing bundled prior is reported by the SD loader, with how to train it
        folder = sd_loader.bundled_toy_prior()
        return ("folder", folder) if _is_multiview_folder(folder) else None
    if model == MVDREAM_PRIOR:
        return "prior", model
    path = Path(model).expanduser()
    if path.suffix.lower() in CHECKPOINT_SUFFIXES and not path.is_dir():
        return "file", path
    if path.is_dir():
        return ("folder", path) if _is_multiview_folder(path) else None
    if model.count("/") == 1 and not model.startswith((".", "/", "~")):
        snapshot = sources.cached_snapshot(model)
        if snapshot is not None and _is_multiview_folder(snapshot):
            return "hub", model
    return None


def _hub_snapshot(repo_id: str, local_files_only: bool | None) -> Path:
    """The complete snapshot of hub repo ``repo_id``: from the cache, else downloaded when allowed."""
    from huggingface_hub import snapshot_download

    cache = sources.hub_cache_dir()
    try:
        return Path(snapshot_download(repo_id, cache_dir=cache, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - not (completely) cached
        cached_error = exc
    if local_files_only or sources.hub_offline_from_env() or not sources.hub_reachable():
        raise GuidanceModelError(f"multi-view model '{repo_id}' is not completely in the local Hugging Face cache "
                                 f"({first_line(cached_error)}) and downloads are off or the hub cannot be reached; "
                                 f"download it on a connected machine with `hf download {repo_id}`")
    try:
        return Path(snapshot_download(repo_id, cache_dir=cache))
    except Exception as exc:  # noqa: BLE001 - network failures become one line
        raise GuidanceModelError(f"could not download {repo_id}: {first_line(exc)}") from exc


def _resolve_prior(local_files_only: bool | None) -> tuple[str, Path]:
    """Where ``mvdream-sd2.1`` is: the cached port, the cached original file, or a download."""
    from huggingface_hub import try_to_load_from_cache

    snapshot = sources.cached_snapshot(MVDREAM_PORT)
    if snapshot is not None:
        return "folder", snapshot
    found = try_to_load_from_cache(MVDREAM_REPO, MVDREAM_FILE, cache_dir=sources.hub_cache_dir())
    if isinstance(found, str):
        return "file", Path(found)
    if local_files_only or sources.hub_offline_from_env() or not sources.hub_reachable():
        raise GuidanceModelError(
            f"prior '{MVDREAM_PRIOR}' is not in the local Hugging Face cache and downloads are off or the hub cannot "
            f"be reached; download it on a connected machine with `hf download {MVDREAM_PORT}` (or "
            f"`hf download {MVDREAM_REPO} {MVDREAM_FILE}`)")
    from huggingface_hub import snapshot_download

    try:
        return "folder", Path(snapshot_download(MVDREAM_PORT, cache_dir=sources.hub_cache_dir()))
    except Exception as exc:  # noqa: BLE001 - network failures become one line
        raise GuidanceModelError(f"could not download {MVDREAM_PORT}: {first_line(exc)}") from exc


def check_parts(folder: Path, name: str, parts: tuple[str, ...] = tuple(_PARTS)) -> None:
    """Raise ``MVDreamWeightsError`` naming the first of ``parts`` that ``folder`` lacks (a
    pixel-space folder, whose ``model_index.json`` declares no VAE, needs none)."""
    for part in parts:
        if part == "vae" and not has_vae(str(folder)):
            continue
        target = folder / _PARTS[part]
        if not (target.is_dir() and any(target.iterdir())) and not target.is_file():
            raise MVDreamWeightsError(f"MVDream folder '{name}' has no {part} (missing {_PARTS[part]}); "
                                      "download the complete port or pass the original .pt checkpoint")


def _load_parts(source: str, dtype: torch.dtype, local_only: bool) -> dict[str, Any]:
    """Tokenizer, text encoder, VAE and scheduler of the pipeline at ``source`` (as the SD loader)."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    common: dict[str, Any] = {"local_files_only": local_only, "cache_dir": str(sources.hub_cache_dir())}
    low_mem = {"low_cpu_mem_usage": importlib.util.find_spec("accelerate") is not None}
    return {
        "tokenizer": CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **common),
        "text_encoder": CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **_text_dtype_kwarg(dtype),
                                                      **common),
        "vae": (AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **low_mem, **common)
                if has_vae(source) else None),
        "scheduler": DDPMScheduler.from_pretrained(source, subfolder="scheduler", **common),
    }


def _folder_unet(folder: Path, name: str, dtype: torch.dtype) -> MultiViewUNet2DConditionModel:
    if _unet_class(folder) == PORT_UNET:
        return load_port_unet(folder / "unet", dtype)
    if _unet_class(folder) != OUR_UNET:
        raise MVDreamKindError(f"'{name}' has no multi-view UNet (unet/config.json names {_unet_class(folder)})")
    try:
        return MultiViewUNet2DConditionModel.from_pretrained(str(folder), subfolder="unet", torch_dtype=dtype)
    except Exception as exc:  # noqa: BLE001 - truncated weights, bad JSON, ... -> one line
        raise MVDreamWeightsError(f"could not load the multi-view UNet of '{name}': {first_line(exc)}") from None


def load_multiview_components(model: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                              local_files_only: bool | None = None, base_model: str = DEFAULT_MODEL) -> SDComponents:
    """Load a multi-view prior (see the module docstring) as ``SDComponents`` whose ``unet`` is a
    :class:`MultiViewUNet2DConditionModel` (eval mode, frozen; float16 on CUDA by default).

    Raises:
        MVDreamWeightsError, MVDreamKindError: bad input (exit 2), before any training.
        GuidanceModelError: a part could not be loaded or fetched (exit 1).
    """
    found = multiview_source(model)
    if found is None:
        raise MVDreamKindError(f"'{model}' is not a multi-view (MVDream) model")
    kind, where = found
    device = torch.device(device)
    net_dtype = resolve_dtype(device, dtype)
    if kind == "tiny":
        kind, where = "folder", ensure_tiny_multiview_pipeline()
    elif kind == "prior":
        kind, where = _resolve_prior(local_files_only)
    elif kind == "hub":
        kind, where = "folder", _hub_snapshot(model, local_files_only)
    where = Path(where)
    if kind == "file":
        if not where.is_file():
            raise MVDreamWeightsError(f"MVDream checkpoint '{model}' does not exist")
        unet = load_single_file_unet(where, net_dtype)
        source, local_only = resolve_source(base_model, local_files_only)
        label = f"{where} (text encoder, VAE, scheduler: {source})"
    else:
        check_parts(where, model)
        unet = _folder_unet(where, model, net_dtype)
        source, local_only, label = str(where), True, str(where)
    try:
        parts = _load_parts(source, net_dtype, local_only)
    except Exception as exc:  # noqa: BLE001 - every loader failure becomes one actionable line
        raise GuidanceModelError(f"could not load the parts of '{model}' from {source}: {first_line(exc)}") from exc
    width = int(parts["text_encoder"].config.hidden_size)
    if int(unet.config.cross_attention_dim) != width:
        raise MVDreamKindError(f"'{model}' does not fit its text encoder ({source}): the UNet attends to "
                               f"{unet.config.cross_attention_dim}-wide text, the encoder gives {width}")
    parts["unet"] = unet
    for name in ("text_encoder", "unet", "vae"):
        if parts[name] is not None:
            net = parts[name].to(device)
            net.eval()
            net.requires_grad_(False)
            parts[name] = net
    vae = parts["vae"]
    native = int(unet.config.sample_size) * (2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1)
    return SDComponents(model_id=model, dtype=net_dtype, device=device, source=label, native_resolution=native,
                        **parts)
