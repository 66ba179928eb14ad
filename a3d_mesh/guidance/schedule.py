"""Schedules as data: linear ramps over training progress, the SDS timestep range and w(t).

Progress is the fraction of the stage done, in ``[0, 1]``. A ``Ramp`` holds ``start`` until
progress ``begin``, moves linearly to ``end`` at progress ``finish``, and holds ``end`` after.
Presets write a ramp as a number (constant), ``[start, end]`` (over the whole stage),
``[start, end, begin, finish]`` or a mapping with those keys; ``Ramp.from_data`` reads all four.

The A3D reference anneals both ends of the timestep range downward over most of the run:
``t_max: 0.98 -> 0.50`` and ``t_min: 0.98 -> 0.02`` (fractions of the T = 1000 training steps),
i.e. pure high-noise SDS at first and an increasingly wide range reaching low noise levels later.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

WEIGHTINGS = ("sds", "uniform")


@dataclass(frozen=True)
class Ramp:
    """Piecewise-linear value of progress: ``start`` -> ``end`` between ``begin`` and ``finish``."""

    start: float
    end: float
    begin: float = 0.0
    finish: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.begin <= self.finish <= 1.0:
            raise ValueError(f"ramp window must satisfy 0 <= begin <= finish <= 1, got {self.begin}, {self.finish}")

    def __call__(self, progress: float) -> float:
        """Value at ``progress`` (clamped to ``[0, 1]``)."""
        p = min(max(float(progress), 0.0), 1.0)
        if p >= self.finish:
            return self.end
        if p <= self.begin:
            return self.start
        frac = (p - self.begin) / (self.finish - self.begin)
        return self.start + frac * (self.end - self.start)

    @classmethod
    def constant(cls, value: float) -> Ramp:
        return cls(float(value), float(value))

    @classmethod
    def from_data(cls, data: float | Sequence[float] | Mapping[str, float] | Ramp) -> Ramp:
        """Read a ramp from preset data (see the module docstring for the accepted forms)."""
        if isinstance(data, Ramp):
            return data
        if isinstance(data, (int, float)):
            return cls.constant(float(data))
        if isinstance(data, Mapping):
            return cls(**{k: float(v) for k, v in data.items()})
        values = [float(v) for v in data]
        if len(values) not in (2, 4):
            raise ValueError(f"a ramp is [start, end] or [start, end, begin, finish], got {list(data)}")
        return cls(*values)

    def to_data(self) -> list[float]:
        """The ``[start, end, begin, finish]`` form (for presets and checkpoints)."""
        return [self.start, self.end, self.begin, self.finish]


def timestep_bounds(t_min: Ramp, t_max: Ramp, progress: float, num_train_timesteps: int) -> tuple[int, int]:
    """Integer timestep range ``[lo, hi]`` (inclusive) at ``progress``.

    Fractions become ``round(fraction * T)`` (round, not truncate: 0.74 * 1000 is 739.99... in
    floating point), clamped to ``[0, T - 1]``; if the schedules cross,
    ``lo`` is lowered to ``hi`` so the range is never empty.
    """
    last = num_train_timesteps - 1
    hi = min(max(round(t_max(progress) * num_train_timesteps), 0), last)
    lo = min(max(round(t_min(progress) * num_train_timesteps), 0), hi)
    return lo, hi


def sample_timesteps(
    lo: int, hi: int, batch: int, generator: torch.Generator, device: torch.device | str
) -> torch.Tensor:
    """``[batch]`` int64 timesteps drawn uniformly from ``{lo, ..., hi}`` with ``generator``
    (drawn on the generator's device, then moved to ``device``)."""
    t = torch.randint(lo, hi + 1, (batch,), generator=generator, device=generator.device)
    return t.to(device)


def sds_weight(alphas_cumprod: torch.Tensor, t: torch.Tensor, weighting: str) -> torch.Tensor:
    """Per-sample SDS weight w(t), ``[B]`` float32.

    ``"sds"``: ``w = 1 - alpha_bar_t`` (DreamFusion's choice, damping the low-noise steps);
    ``"uniform"``: ``w = 1``.
    """
    if weighting == "sds":
        return (1.0 - alphas_cumprod[t]).float()
    if weighting == "uniform":
        return torch.ones(t.shape, dtype=torch.float32, device=t.device)
    raise ValueError(f"unknown SDS weighting {weighting!r}; expected one of {WEIGHTINGS}")
