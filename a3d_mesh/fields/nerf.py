"""``NeRFField``: the coarse-stage latent-conditioned density + albedo field.

Density: ``sigma = softplus(raw + blob(x))`` with the Magic3D blob bias
``blob(x) = blob_density * (1 - |x| / blob_radius)`` (world units), which starts training from a
soft ball of density ``~blob_density`` at the centre fading to zero at ``blob_radius`` and beyond.
Softplus is the default activation because it is smooth, never overflows and has gradient <= 1, so
the SDS gradients on the grid stay bounded; ``"trunc_exp"`` (exp forward, gradient computed with
the input clamped at 15) is available for the sharper, instant-NGP-style density.
Albedo: ``sigmoid(raw)`` in [0, 1]. Both heads share one grid (a :class:`LatentField`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from a3d_mesh.models import ConfigModel

from .hashgrid_layout import HashGridConfig
from .latent import LatentField

DENSITY_ACTIVATIONS = ("softplus", "trunc_exp")
_TRUNC_EXP_CLAMP = 15.0


class _TruncExp(torch.autograd.Function):
    """``exp(x)`` whose backward uses ``exp(min(x, 15))`` so one huge density cannot blow up Adam."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=_TRUNC_EXP_CLAMP))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """Exponential with gradient computed at ``min(x, 15)`` (elementwise, any shape)."""
    return _TruncExp.apply(x)


def blob_bias(x_world: torch.Tensor, blob_density: float, blob_radius: float) -> torch.Tensor:
    """Magic3D density bias ``blob_density * (1 - |x| / blob_radius)``: [N, 3] -> [N]."""
    return blob_density * (1.0 - torch.linalg.vector_norm(x_world, dim=-1) / blob_radius)


class NeRFField(ConfigModel, nn.Module):
    """Latent-conditioned NeRF field: ``(x_world, u) -> (sigma [N] >= 0, albedo [N, 3] in [0, 1])``.

    Attributes:
        field: the :class:`LatentField` with heads ``"density"`` (1) and ``"albedo"`` (3).
        blob_density, blob_radius: blob bias parameters (world units).
        density_activation: ``"softplus"`` or ``"trunc_exp"``.

    Saved and loaded with its config (:class:`a3d_mesh.models.ConfigModel`): ``save(folder)``,
    ``NeRFField.load(folder)``.
    """

    config_types = {"grid": HashGridConfig}

    def __init__(
        self,
        n_codes: int,
        grid: HashGridConfig,
        hidden: int = 64,
        n_hidden_layers: int = 1,
        bound: float = 1.0,
        blob_density: float = 10.0,
        blob_radius: float = 0.5,
        backend: str = "auto",
        density_activation: str = "softplus",
        seed: int | None = None,
    ) -> None:
        """Build the field.

        Args:
            n_codes: K, number of objects.
            grid: hash-grid hyper-parameters (one grid shared by both heads).
            hidden, n_hidden_layers: head MLP size.
            bound: world cube half side.
            blob_density: blob bias at the centre (pre-activation).
            blob_radius: radius (world units) where the blob bias crosses zero.
            backend: hash-grid backend.
            density_activation: ``"softplus"`` (default) or ``"trunc_exp"``.
            seed: seed of the grid initialisation.
        """
        super().__init__()
        self.register_config(n_codes=n_codes, grid=grid, hidden=hidden, n_hidden_layers=n_hidden_layers, bound=bound,
                             blob_density=blob_density, blob_radius=blob_radius,
                             density_activation=density_activation)
        if density_activation not in DENSITY_ACTIVATIONS:
            raise ValueError(f"density_activation must be one of {DENSITY_ACTIVATIONS}")
        if blob_radius <= 0:
            raise ValueError("blob_radius must be positive")
        self.field = LatentField(
            n_codes, grid, {"density": 1, "albedo": 3}, hidden, n_hidden_layers, bound, backend, seed
        )
        self.blob_density = float(blob_density)
        self.blob_radius = float(blob_radius)
        self.density_activation = density_activation

    @property
    def n_codes(self) -> int:
        """Width K of the code."""
        return self.field.n_codes

    def _activate_density(self, raw: torch.Tensor, x_world: torch.Tensor) -> torch.Tensor:
        """[N, 1] raw head output -> [N] density >= 0."""
        pre = raw[:, 0] + blob_bias(x_world.float(), self.blob_density, self.blob_radius)
        return F.softplus(pre) if self.density_activation == "softplus" else trunc_exp(pre)

    def density(self, x_world: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Density only (skips the albedo head).

        Args:
            x_world: [N, 3] world points.
            u: [K] or [N, K] code.

        Returns:
            [N] float32 density >= 0.
        """
        raw = self.field(x_world, u, names=("density",))["density"]
        return self._activate_density(raw, x_world)

    def forward(self, x_world: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Density and albedo at world points.

        Args:
            x_world: [N, 3] world points.
            u: [K] or [N, K] code.

        Returns:
            sigma: [N] density >= 0.
            albedo: [N, 3] colour in [0, 1].
        """
        out = self.field(x_world, u)
        return self._activate_density(out["density"], x_world), torch.sigmoid(out["albedo"])
