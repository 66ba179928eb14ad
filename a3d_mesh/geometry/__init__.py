"""DMTet geometry: tetrahedral grids, marching tetrahedra, the shared latent-conditioned grid.

Public API:
- :func:`tet_grid`, :func:`tet_edges`: Kuhn-subdivided cube lattice in ``[-0.5, 0.5]^3``, positively
  oriented, cached on disk (``resolution`` 128 -> 274,625 vertices, like public DMTet grids).
- :func:`marching_tets`: kaolin's marching tetrahedra (kaolin on CUDA, identical pure-torch path
  otherwise); SDF negative inside, faces counter-clockwise seen from outside.
- :class:`DMTetField`: the shared grid + :class:`a3d_mesh.fields.LatentField` SDF/offset heads;
  mesh per code ``u`` or per-point code field ``u(x)``.
- Regularisers: :func:`sdf_sign_entropy`, :func:`normal_consistency`, :func:`laplacian_smoothness`.
- Initialisation: :func:`mesh_sdf` (winding-number sign), :func:`mesh_target`, :func:`fit_dmtet`.
- Checks: :func:`is_closed_oriented_manifold`, :func:`euler_characteristic`, :func:`signed_volume`.
"""

from .dmtet import DMTetField
from .fit import TargetPool, fit_dmtet, mesh_target, near_surface_weights, sample_fit_points
from .marching import marching_tets
from .mesh_sdf import mesh_sdf, nearest_distance, point_triangle_distance_sq, winding_number
from .regularizers import (adjacent_face_pairs, face_normals, laplacian_smoothness, mesh_edges,
                           normal_consistency, sdf_sign_entropy, vertex_normals)
from .topology import connected_components, euler_characteristic, is_closed_oriented_manifold, signed_volume
from .tets import build_tet_grid, cells_per_axis, default_cache_dir, tet_edges, tet_grid

__all__ = [
    "DMTetField",
    "TargetPool",
    "adjacent_face_pairs",
    "build_tet_grid",
    "connected_components",
    "euler_characteristic",
    "is_closed_oriented_manifold",
    "signed_volume",
    "cells_per_axis",
    "default_cache_dir",
    "face_normals",
    "fit_dmtet",
    "laplacian_smoothness",
    "marching_tets",
    "mesh_edges",
    "mesh_sdf",
    "mesh_target",
    "near_surface_weights",
    "nearest_distance",
    "normal_consistency",
    "point_triangle_distance_sq",
    "sample_fit_points",
    "sdf_sign_entropy",
    "tet_edges",
    "tet_grid",
    "vertex_normals",
    "winding_number",
]
