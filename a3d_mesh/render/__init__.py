"""Differentiable mesh rendering with nvdiffrast's op semantics: nvdiffrast on CUDA, an exact
torch path (fast compiled visibility + differentiable barycentrics) everywhere else.

See :mod:`a3d_mesh.render.ops` for backends, conventions and the CPU design note.
"""

from .ops import (
    antialias,
    antialias_construct_topology_hash,
    available_backends,
    interpolate,
    rasterize,
    texture,
    texture_construct_mip,
    visibility,
    visibility_engine,
)

__all__ = [
    "antialias",
    "antialias_construct_topology_hash",
    "available_backends",
    "interpolate",
    "rasterize",
    "texture",
    "texture_construct_mip",
    "visibility",
    "visibility_engine",
]
