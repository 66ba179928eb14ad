"""Diffusion guidance: SD-family model loading, the tiny test pipeline, prompt embeddings and SDS.

Typical use::

    components = load_components("sd-2.1-base", device="cuda")    # a known prior, a hub id or a folder
    embeddings = encode_prompts(components, prompts, negatives, ViewPromptConfig())  # frees the encoder
    sds = SDSGuidance(components, embeddings, SDSConfig(), seed=0)
    views = sds.camera_views(cams.elevation, cams.azimuth)          # [B] view of each camera
    out = sds(images, u, progress, views=views)                     # images [B,H,W,3] in [0,1]
    out.loss.backward()

``load_components("tiny", ...)`` gives a random-weight pipeline of the same layout for tests.
Memory options are documented in ``a3d_mesh.guidance.sds``.
"""

from a3d_mesh.guidance.embeddings import PromptEmbeddings, encode_prompts, mix_embeddings, truncation_warnings
from a3d_mesh.guidance.loader import (
    DEFAULT_MODEL,
    GuidanceModelError,
    ModelInputError,
    ModelKindError,
    SDComponents,
    load_components,
    resolve_dtype,
)
from a3d_mesh.guidance.schedule import Ramp, sds_weight, timestep_bounds
from a3d_mesh.guidance.sds import SDSConfig, SDSGuidance, SDSOutput, apply_memory_options, classifier_free_epsilon
from a3d_mesh.guidance.sources import KNOWN_PRIORS, KnownPrior, PriorSource, known_prior_lines
from a3d_mesh.guidance.tiny import build_tiny_pipeline, tiny_cache_dir
from a3d_mesh.guidance.views import ViewPromptConfig, view_index

__all__ = [
    "DEFAULT_MODEL",
    "GuidanceModelError",
    "KNOWN_PRIORS",
    "KnownPrior",
    "ModelInputError",
    "ModelKindError",
    "PriorSource",
    "PromptEmbeddings",
    "Ramp",
    "SDComponents",
    "SDSConfig",
    "SDSGuidance",
    "SDSOutput",
    "ViewPromptConfig",
    "apply_memory_options",
    "build_tiny_pipeline",
    "classifier_free_epsilon",
    "encode_prompts",
    "known_prior_lines",
    "load_components",
    "mix_embeddings",
    "resolve_dtype",
    "sds_weight",
    "tiny_cache_dir",
    "timestep_bounds",
    "truncation_warnings",
    "view_index",
]
