"""Initialise the shared DMTet field: fit its SDF head to one target SDF per simplex corner.

The targets come from the coarse NeRF (signed, thresholded density, built by the train stage) or
from an input mesh (:func:`mesh_target`). All corners are fitted together, every step, because the
hash grid is shared: fitting them one after the other would let the last one overwrite the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import torch

from .dmtet import DMTetField
from .mesh_sdf import mesh_sdf

Target = Callable[[torch.Tensor], torch.Tensor]


def sample_fit_points(field: DMTetField, batch: int, generator: torch.Generator | None) -> torch.Tensor:
    """Training points: half uniform in the world cube, half undeformed grid vertices.

    Grid vertices are where marching tets reads the SDF, so they get half of the batch; the
    uniform half keeps the field sensible between them (offsets move vertices by up to half a cell).

    Returns:
        [batch, 3] float32 world-frame points on the field's device.
    """
    n_uniform = batch // 2
    uniform = (torch.rand(n_uniform, 3, generator=generator) * 2.0 - 1.0) * field.bound
    idx = torch.randint(0, field.grid_verts.shape[0], (batch - n_uniform,), generator=generator)
    device = field.grid_verts.device
    return torch.cat([uniform.to(device), field.world_grid[idx.to(device)]])


class TargetPool:
    """Targets evaluated once on a fixed pool: all grid vertices + ``max(V, min_uniform)`` uniform points.

    For expensive targets (mesh signed distance is O(points * faces)): the fit then samples its
    batches from the pool instead of calling the targets every step.
    """

    def __init__(self, field: DMTetField, targets: Sequence[Target], generator: torch.Generator | None,
                 min_uniform: int = 1 << 16) -> None:
        grid = field.world_grid
        # Coarse grids alone are too sparse a pool: the fit would be free between their vertices.
        n_uniform = max(grid.shape[0], min_uniform)
        uniform = (torch.rand(n_uniform, 3, generator=generator) * 2.0 - 1.0) * field.bound
        self.points = torch.cat([grid, uniform.to(grid.device)])  # [P, 3] world
        done: dict[int, torch.Tensor] = {}  # one evaluation per distinct target (edits pass one K times)
        with torch.no_grad():
            for fn in targets:
                if id(fn) not in done:
                    done[id(fn)] = fn(self.points).reshape(-1).to(device=grid.device, dtype=torch.float32)
        self.values = [done[id(fn)] for fn in targets]  # K x [P]

    def sample(self, k: int, batch: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """[batch, 3] pool points and their [batch] target values for corner k."""
        idx = torch.randint(0, self.points.shape[0], (batch,), generator=generator).to(self.points.device)
        return self.points[idx], self.values[k][idx]


def near_surface_weights(target: torch.Tensor, near_fraction: float, near_weight: float) -> torch.Tensor:
    """Per-point loss weights: ``1 + near_weight`` for the ``near_fraction`` of points closest to the
    zero level (smallest ``|target|``), 1 elsewhere.

    A rank rule rather than a distance band, because density-based targets are not metric.

    Args:
        target: [N] target SDF values.

    Returns:
        [N] float weights.
    """
    mag = target.abs()
    cutoff = torch.quantile(mag, near_fraction) if mag.numel() else mag.new_zeros(())
    return 1.0 + near_weight * (mag <= cutoff).to(target.dtype)


def fit_dmtet(field: DMTetField, targets: Sequence[Target], steps: int = 1000, lr: float = 1e-2,
              batch: int = 16384, near_fraction: float = 0.25, near_weight: float = 4.0,
              offset_weight: float = 0.1, generator: torch.Generator | None = None,
              cache_targets: bool = False, clamp: float | None = None) -> list[float]:
    """Fit the shared field's SDF at every corner ``e_k`` to ``targets[k]``, offsets towards zero.

    Loss per step: sum over corners of the weighted mean squared SDF error
    (:func:`near_surface_weights`) plus ``offset_weight`` times the mean squared normalised offset
    (``tanh(raw)``, in [-1, 1]) so the grid starts undeformed. Adam (betas 0.9/0.99) on all the
    field's parameters.

    Args:
        field: the :class:`DMTetField` to fit (modified in place).
        targets: one callable per corner, ``len(targets) == field.n_codes``; ``targets[k]`` maps
            [N, 3] world points (field device) to the [N] target SDF of object k in the field's
            convention (negative inside). Called under ``no_grad``.
        steps, lr, batch: optimisation steps, learning rate, points per corner per step.
        near_fraction, near_weight: see :func:`near_surface_weights`.
        offset_weight: weight of the offset penalty.
        generator: CPU generator for the point samples (reproducible runs).
        cache_targets: evaluate the targets once on a :class:`TargetPool` and sample from it
            (use for mesh targets); otherwise fresh points every step
            (:func:`sample_fit_points`).
        clamp: truncate targets to ``[-clamp, clamp]`` (for density-based targets, whose inside
            values are unbounded and would otherwise dominate the squared error); None keeps them.

    Returns:
        the loss of every step (floats).
    """
    if len(targets) != field.n_codes:
        raise ValueError(f"need one target per corner: {len(targets)} targets for {field.n_codes} codes")
    device = field.grid_verts.device
    opt = torch.optim.Adam(field.parameters(), lr=lr, betas=(0.9, 0.99), eps=1e-15)
    eye = torch.eye(field.n_codes, device=device)
    unit = 2.0 * field.bound / field.resolution  # world length of the offset bound
    pool = TargetPool(field, targets, generator) if cache_targets else None
    history: list[float] = []
    for _ in range(steps):
        loss = torch.zeros((), device=device)
        for k, target_fn in enumerate(targets):
            if pool is not None:
                points, target = pool.sample(k, batch, generator)
            else:
                points = sample_fit_points(field, batch, generator)
                with torch.no_grad():
                    target = target_fn(points).reshape(-1).to(device=device, dtype=torch.float32)
            if clamp is not None:
                target = target.clamp(-clamp, clamp)
            sdf, offset = field.query(points, eye[k])
            weights = near_surface_weights(target, near_fraction, near_weight)
            loss = loss + (weights * (sdf - target).pow(2)).mean()
            if offset_weight > 0:
                loss = loss + offset_weight * (offset / unit).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    return history


def mesh_target(verts: torch.Tensor, faces: torch.Tensor, chunk_pairs: int = 1 << 21) -> Target:
    """Target for :func:`fit_dmtet` from an input mesh (editing use): its signed distance.

    Expensive per call; fit with ``cache_targets=True``.

    Args:
        verts: [V, 3] float world-frame vertices; faces: [F, 3] int64 counter-clockwise outside.

    Returns:
        callable [N, 3] world points -> [N] signed distance (negative inside), on the points'
        device.
    """
    def target(points: torch.Tensor) -> torch.Tensor:
        return mesh_sdf(verts, faces, points, chunk_pairs=chunk_pairs)

    return target
