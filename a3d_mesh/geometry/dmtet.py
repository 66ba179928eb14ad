"""One deformable tetrahedral grid shared by every object and transition (the A3D refine stage).

For every grid vertex, the SDF and a bounded offset are predicted from (hash features of the
vertex position, simplex code u) by :class:`a3d_mesh.fields.LatentField` with heads
``{"sdf": 1, "offset": 3}``; marching tetrahedra turns them into the mesh of code u.

Frames: the grid is built in the unit cube ``[-0.5, 0.5]^3`` (:func:`tet_grid`) and scaled by
``2 * bound`` into the world cube ``[-bound, bound]^3``. The offset of a vertex is
``tanh(raw) / resolution`` in unit-cube units (half a lattice cube, see :mod:`.tets`), i.e.
``2 * bound * tanh(raw) / resolution`` in world units. SDF: negative inside, positive outside.
"""

from __future__ import annotations

import torch
from torch import nn

from a3d_mesh.fields import HashGridConfig, LatentField
from a3d_mesh.models import ConfigModel
from a3d_mesh.simplex import Code

from .marching import marching_tets
from .tets import tet_edges, tet_grid

# The SDF floor on the grid's outer vertices (see ``DMTetField.sdf_and_verts``).
BOUNDARY_SDF = 1e-4


class DMTetField(ConfigModel, nn.Module):
    """Shared DMTet grid with latent-conditioned SDF and offset heads.

    Attributes:
        grid_verts: [V, 3] float32 buffer, undeformed grid vertices in the unit cube.
        boundary: [V] bool buffer, the vertices on the faces of the cube.
        tets: [T, 4] int64 buffer, positively oriented.
        edges: [E, 2] int64 unique grid edges (for :func:`sdf_sign_entropy`), computed on first
            access on the device of ``tets`` (a sort of 6T keys: seconds on CPU at 128).
        field: the :class:`LatentField` (its parameters are the only trainable ones).
        The buffers are not saved in ``state_dict`` (they are rebuilt from ``resolution``).

    Saved and loaded with its config (:class:`a3d_mesh.models.ConfigModel`): ``save(folder)``,
    ``DMTetField.load(folder)``.
    """

    config_types = {"grid": HashGridConfig}

    def __init__(self, n_codes: int, resolution: int, grid: HashGridConfig, hidden: int = 64,
                 n_hidden_layers: int = 1, bound: float = 1.0, backend: str = "auto",
                 seed: int | None = None) -> None:
        """
        Args:
            n_codes: K, the simplex dimension (number of objects).
            resolution: nominal DMTet grid resolution in [8, 256] (128: 274,625 vertices).
            grid: hash-grid configuration of the shared spatial encoding.
            hidden, n_hidden_layers: per-head MLP width and depth.
            bound: half side of the world cube.
            backend: hash-grid backend passed to :class:`LatentField` (``"auto"``, ``"torch"``,
                ``"tcnn"``, ``"triton"``); marching tets picks kaolin by itself on CUDA tensors.
            seed: seed of the hash-table initialisation (None: global RNG).
        """
        super().__init__()
        self.register_config(n_codes=n_codes, resolution=resolution, grid=grid, hidden=hidden,
                             n_hidden_layers=n_hidden_layers, bound=bound)
        self.n_codes, self.resolution, self.bound = n_codes, resolution, float(bound)
        verts, tets = tet_grid(resolution)
        self.register_buffer("grid_verts", verts, persistent=False)
        self.register_buffer("tets", tets, persistent=False)
        self.register_buffer("boundary", (verts.abs() >= 0.5 - 1e-6).any(-1), persistent=False)
        self._edges: torch.Tensor | None = None
        self.field = LatentField(n_codes, grid, heads={"sdf": 1, "offset": 3}, hidden=hidden,
                                 n_hidden_layers=n_hidden_layers, bound=bound, backend=backend, seed=seed)

    @property
    def edges(self) -> torch.Tensor:
        """[E, 2] int64 unique grid edges on the device of ``tets`` (cached)."""
        if self._edges is None or self._edges.device != self.tets.device:
            self._edges = tet_edges(self.tets)
        return self._edges

    @property
    def world_grid(self) -> torch.Tensor:
        """[V, 3] undeformed grid vertices in the world frame."""
        return self.grid_verts * (2.0 * self.bound)

    def _codes(self, u: Code, points_world: torch.Tensor) -> torch.Tensor:
        """Resolve ``u`` to the ``[K]`` or ``[N, K]`` tensor :class:`LatentField` takes."""
        codes = u(points_world) if callable(u) else u
        codes = codes.to(device=points_world.device, dtype=points_world.dtype)
        if codes.shape[-1] != self.n_codes or codes.dim() not in (1, 2):
            raise ValueError(f"code must be [{self.n_codes}] or [N, {self.n_codes}], got {tuple(codes.shape)}")
        if codes.dim() == 2 and codes.shape[0] != points_world.shape[0]:
            raise ValueError(f"per-point code has {codes.shape[0]} rows for {points_world.shape[0]} points")
        return codes

    def query(self, points_world: torch.Tensor, u: Code) -> tuple[torch.Tensor, torch.Tensor]:
        """SDF and bounded offset at arbitrary world points (used by the grid and by fitting).

        Args:
            points_world: [N, 3] float32 points in ``[-bound, bound]^3``.
            u: [K] code, [N, K] per-point codes, or a callable ``[N, 3] world -> [N, K]``.

        Returns:
            sdf: [N] float32, negative inside.
            offset: [N, 3] float32 in world units, each component in
                ``(-2 bound / resolution, 2 bound / resolution)``.
        """
        out = self.field(points_world, self._codes(u, points_world))
        sdf = out["sdf"][:, 0]
        offset = torch.tanh(out["offset"]) * (2.0 * self.bound / self.resolution)
        return sdf, offset

    def sdf_and_verts(self, u: Code) -> tuple[torch.Tensor, torch.Tensor]:
        """The grid at code ``u``.

        Args:
            u: [K] code, or a callable code field ``[V, 3] world -> [V, K]`` (hybrids), evaluated
                at the undeformed grid vertices.

        Returns:
            sdf: [V] float32 per grid vertex; on the cube's faces at least ``BOUNDARY_SDF``.
            verts_world: [V, 3] float32 deformed grid vertices in the world frame.

        The cube's outer vertices are kept outside: a shape (or debris in corners no training view
        sees) that reaches the cube would otherwise be cut open there, and every mesh of the set,
        hybrids included, must be closed.
        """
        base = self.world_grid
        sdf, offset = self.query(base, u)
        sdf = torch.where(self.boundary, sdf.clamp_min(BOUNDARY_SDF), sdf)
        return sdf, base + offset

    def extract(self, u: Code, return_tet_idx: bool = False) -> tuple[torch.Tensor, ...]:
        """Mesh of code ``u`` by marching tetrahedra (differentiable w.r.t. the field).

        Returns:
            verts: [Vm, 3] float32 world frame; faces: [F, 3] int64 counter-clockwise seen from
            outside; (tet_idx: [F] int64 if asked).
        """
        sdf, verts = self.sdf_and_verts(u)
        return marching_tets(verts, self.tets, sdf, return_tet_idx=return_tet_idx)
