"""Hash-grid configuration and tiny-cuda-nn's per-level parameter layout.

Everything here is plain integer/float32 arithmetic on the host; no tensors. The numbers must be
the ones tiny-cuda-nn's ``GridEncodingTemplated`` computes, because the flat parameter vector is
shared between the tinycudann backend and the pure-torch backend:

- level scale ``s_l = exp2(l * log2(per_level_scale)) * base_resolution - 1`` evaluated in float32
  (``base_resolution`` counts grid *vertices*, hence the ``- 1``);
- level resolution ``r_l = ceil(s_l) + 1`` vertices per axis;
- table size ``T_l = min(next_multiple(r_l^3, 8), 2^log2_hashmap_size)`` entries (``r_l^3`` is
  capped at ``2^31 - 1`` first, as tcnn does to avoid uint32 overflow);
- a level is *dense* (row-major index ``x + y r + z r^2``) when ``r_l^3 <= T_l``, otherwise it is
  *hashed* with the coherent prime hash;
- level ``l`` owns entries ``[O_l, O_l + T_l)``, ``O_l = sum_{j<l} T_j``; entry ``e`` feature ``f``
  lives at flat position ``e * n_features_per_level + f``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# tcnn caps the dense parameter count of a level at uint32_max / 2 before rounding it up to 8.
_MAX_DENSE_PARAMS = (2**32 - 1) // 2
# Initialisation range of tcnn's GridEncoding::initialize_params (uniform in [-1e-4, 1e-4]).
INIT_RANGE = 1e-4


@dataclass
class HashGridConfig:
    """Multiresolution hash-grid hyper-parameters (tiny-cuda-nn "HashGrid" semantics).

    Defaults are the A3D reference: 16 levels x 2 features, 2^19 entries per hashed level,
    coarsest level with 16 vertices per axis, growth factor 1.4473 per level.
    """

    n_levels: int = 16
    n_features_per_level: int = 2
    log2_hashmap_size: int = 19
    base_resolution: int = 16
    per_level_scale: float = 1.4473

    def __post_init__(self) -> None:
        for name in ("n_levels", "n_features_per_level", "log2_hashmap_size", "base_resolution"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"HashGridConfig.{name} must be a positive int, got {value!r}")
        if self.log2_hashmap_size > 30:
            raise ValueError("HashGridConfig.log2_hashmap_size must be <= 30")
        if not (isinstance(self.per_level_scale, (int, float)) and self.per_level_scale >= 1.0):
            raise ValueError(f"HashGridConfig.per_level_scale must be >= 1, got {self.per_level_scale!r}")

    @property
    def n_output_dims(self) -> int:
        """Width of the encoding: ``n_levels * n_features_per_level``."""
        return self.n_levels * self.n_features_per_level

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (YAML/JSON friendly)."""
        return asdict(self)

    def tcnn_config(self) -> dict[str, Any]:
        """The ``encoding_config`` dict for ``tinycudann.Encoding`` describing the same grid."""
        return {
            "otype": "Grid",
            "type": "Hash",
            "n_levels": self.n_levels,
            "n_features_per_level": self.n_features_per_level,
            "log2_hashmap_size": self.log2_hashmap_size,
            "base_resolution": self.base_resolution,
            "per_level_scale": float(self.per_level_scale),
            "interpolation": "Linear",
            # Older tcnn ignores this key and always uses the same coherent prime hash.
            "hash": "CoherentPrime",
        }


@dataclass(frozen=True)
class LevelLayout:
    """Geometry and storage of one grid level.

    Attributes:
        level: level number (0 = coarsest).
        scale: float32 value of ``s_l`` (stored as a Python float holding a float32 number).
        resolution: ``r_l``, vertices per axis.
        offset: first table entry of this level in the flat table (entries, not floats).
        size: ``T_l``, number of table entries of this level.
        dense: True when the level is indexed densely (no hashing).
    """

    level: int
    scale: float
    resolution: int
    offset: int
    size: int
    dense: bool


def level_scale(level: int, per_level_scale: float, base_resolution: int) -> float:
    """tcnn's ``grid_scale``: ``exp2f(level * log2f(per_level_scale)) * base_resolution - 1`` in float32.

    Returns a Python float holding the exact float32 result (host libm; CUDA's exp2f may differ by
    an ulp, which moves sample positions by ~1e-7 of a cell).
    """
    log2_scale = np.log2(np.float32(per_level_scale))
    exponent = np.float32(np.float32(level) * log2_scale)
    value = np.float32(np.exp2(exponent)) * np.float32(base_resolution) - np.float32(1.0)
    return float(np.float32(value))


def level_resolution(scale: float) -> int:
    """tcnn's ``grid_resolution``: ``ceil(scale) + 1`` vertices per axis."""
    return int(math.ceil(scale)) + 1


def level_layouts(cfg: HashGridConfig) -> tuple[LevelLayout, ...]:
    """Per-level scale, resolution, table offset/size and dense flag, in tcnn's order."""
    layouts: list[LevelLayout] = []
    offset = 0
    hash_cap = 1 << cfg.log2_hashmap_size
    for level in range(cfg.n_levels):
        scale = level_scale(level, cfg.per_level_scale, cfg.base_resolution)
        res = level_resolution(scale)
        dense_params = res**3
        if float(res) ** 3 > float(_MAX_DENSE_PARAMS):
            dense_params = _MAX_DENSE_PARAMS
        size = min(-(-dense_params // 8) * 8, hash_cap)
        # tcnn hashes exactly when the table is smaller than the dense vertex count r^3.
        dense = res**3 <= size
        layouts.append(LevelLayout(level, scale, res, offset, size, dense))
        offset += size
    return tuple(layouts)


def n_table_entries(cfg: HashGridConfig) -> int:
    """Total number of table entries over all levels (``sum_l T_l``)."""
    last = level_layouts(cfg)[-1]
    return last.offset + last.size


def n_params(cfg: HashGridConfig) -> int:
    """Length of the flat parameter vector: entries times features per level."""
    return n_table_entries(cfg) * cfg.n_features_per_level
