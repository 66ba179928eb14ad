"""``LatentField``: one shared hash grid, small code-conditioned heads (the A3D model).

The grid is shared by every object of the set and never sees the code u; u is concatenated to
the grid features and fed to one :class:`CodeMLP` per head. The same field is evaluated at a
per-batch code ``u [K]`` (training, per-object export) or a per-point code ``u [N, K]`` (hybrids).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .hashgrid import HashGrid
from .hashgrid_layout import HashGridConfig
from .mlp import CodeMLP


def world_to_unit(x_world: torch.Tensor, bound: float) -> torch.Tensor:
    """Map world points in ``[-bound, bound]^3`` to grid input ``[0, 1]^3`` (clamped).

    Args:
        x_world: [..., 3] world-frame points.
        bound: half side of the world cube.

    Returns:
        [..., 3] ``clamp((x + bound) / (2 bound), 0, 1)``, same dtype. Points outside the cube
        read the grid on the cube's faces (the clamp has zero gradient there).
    """
    return ((x_world + bound) / (2.0 * bound)).clamp(0.0, 1.0)


class LatentField(nn.Module):
    """Shared hash grid + per-head code MLPs: ``(x_world, u) -> {head: raw [N, dims]}``.

    Attributes:
        encoding: the shared :class:`HashGrid`.
        heads: ``nn.ModuleDict`` of :class:`CodeMLP`, one per head name.
        head_dims: ``{name: output width}``.
        n_codes: code width K.
        bound: half side of the world cube.
    """

    def __init__(
        self,
        n_codes: int,
        grid: HashGridConfig,
        heads: Mapping[str, int],
        hidden: int = 64,
        n_hidden_layers: int = 1,
        bound: float = 1.0,
        backend: str = "auto",
        seed: int | None = None,
    ) -> None:
        """Build the field.

        Args:
            n_codes: K, number of objects (width of the simplex code).
            grid: hash-grid hyper-parameters.
            heads: head name -> output width, e.g. ``{"sdf": 1, "offset": 3}``.
            hidden: hidden width of every head.
            n_hidden_layers: hidden layers per head.
            bound: world cube half side; inputs are mapped to [0, 1]^3 by :func:`world_to_unit`.
            backend: hash-grid backend (``"auto" | "torch" | "tcnn" | "triton"``, see :class:`HashGrid`).
            seed: seed of the grid table initialisation (None: global RNG).
        """
        super().__init__()
        if n_codes < 1 or not heads:
            raise ValueError("LatentField needs n_codes >= 1 and at least one head")
        if bound <= 0:
            raise ValueError(f"bound must be positive, got {bound}")
        self.n_codes = n_codes
        self.bound = float(bound)
        self.head_dims = {str(name): int(dims) for name, dims in heads.items()}
        self.encoding = HashGrid(grid, backend=backend, seed=seed)
        self.heads = nn.ModuleDict(
            {
                name: CodeMLP(self.encoding.n_output_dims, n_codes, dims, hidden, n_hidden_layers)
                for name, dims in self.head_dims.items()
            }
        )

    def encode(self, x_world: torch.Tensor) -> torch.Tensor:
        """Shared grid features of world points (code independent, so reusable across codes).

        Args:
            x_world: [N, 3] world-frame points.

        Returns:
            [N, n_levels * n_features_per_level] float32 features.
        """
        if x_world.ndim != 2 or x_world.shape[1] != 3:
            raise ValueError(f"LatentField expects points [N, 3], got {tuple(x_world.shape)}")
        return self.encoding(world_to_unit(x_world.float(), self.bound))

    def decode(
        self, feat: torch.Tensor, u: torch.Tensor, names: tuple[str, ...] | None = None
    ) -> dict[str, torch.Tensor]:
        """Evaluate heads on precomputed features.

        Args:
            feat: [N, D] features from :meth:`encode`.
            u: [K] code for all points or [N, K] code per point.
            names: heads to evaluate (default: all, in construction order).

        Returns:
            ``{name: [N, dims] raw output}``.
        """
        selected = tuple(self.head_dims) if names is None else names
        unknown = [name for name in selected if name not in self.heads]
        if unknown:
            raise KeyError(f"unknown heads {unknown}; have {list(self.head_dims)}")
        return {name: self.heads[name](feat, u) for name in selected}

    def forward(
        self, x_world: torch.Tensor, u: torch.Tensor, names: tuple[str, ...] | None = None
    ) -> dict[str, torch.Tensor]:
        """Raw head outputs at world points.

        Args:
            x_world: [N, 3] world-frame points (clamped into the cube for the grid lookup).
            u: [K] code for all points or [N, K] code per point (hybrids).
            names: heads to evaluate (default: all).

        Returns:
            ``{name: [N, dims] raw output}`` (no activations).
        """
        return self.decode(self.encode(x_world), u, names)
