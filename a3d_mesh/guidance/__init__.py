"""Diffusion guidance: SD-family model loading, the tiny test pipeline, prompt embeddings and SDS.

Typical use::

    components = load_components("stabilityai/stable-diffusion-2-1-base", device="cuda")
    embeddings = encode_prompts(components, prompts, negatives)   # frees the text encoder
    sds = SDSGuidance(components, embeddings, SDSConfig(), seed=0)
    out = sds(images, u, progress)                                # images [B,H,W,3] in [0,1]
    out.loss.backward()

``load_components("tiny", ...)`` gives a random-weight pipeline of the same layout for tests.
Memory options are documented in ``a3d_mesh.guidance.sds``.
"""

from a3d_mesh.guidance.embeddings import PromptEmbeddings, encode_prompts, mix_embeddings
from a3d_mesh.guidance.loader import (
    DEFAULT_MODEL,
    GuidanceModelError,
    SDComponents,
    load_components,
    resolve_dtype,
)
from a3d_mesh.guidance.schedule import Ramp, sds_weight, timestep_bounds
from a3d_mesh.guidance.sds import SDSConfig, SDSGuidance, SDSOutput, apply_memory_options, cfg_epsilon
from a3d_mesh.guidance.tiny import build_tiny_pipeline, tiny_cache_dir

__all__ = [
    "DEFAULT_MODEL",
    "GuidanceModelError",
    "PromptEmbeddings",
    "Ramp",
    "SDComponents",
    "SDSConfig",
    "SDSGuidance",
    "SDSOutput",
    "apply_memory_options",
    "build_tiny_pipeline",
    "cfg_epsilon",
    "encode_prompts",
    "load_components",
    "mix_embeddings",
    "resolve_dtype",
    "sds_weight",
    "tiny_cache_dir",
    "timestep_bounds",
]
