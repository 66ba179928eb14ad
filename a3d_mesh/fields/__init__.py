"""Fields: multiresolution hash grid (tinycudann or pure torch) and latent-conditioned heads.

Public API:
- :class:`HashGridConfig`, :class:`HashGrid`: tcnn-exact hash encoding of [0,1]^3 points, one flat
  parameter vector in tiny-cuda-nn's layout whatever the backend.
- :class:`CodeMLP`: small MLP on ``[grid features, code u]``.
- :class:`LatentField`: shared grid + one CodeMLP per head, world-frame input, ``u`` per batch
  ``[K]`` or per point ``[N, K]``.
- :class:`NeRFField`: density (blob bias, softplus) + albedo heads for the coarse stage.
"""

from .hashgrid import HashGrid, import_tcnn, init_params, tcnn_disabled_by_env
from .hashgrid_layout import HashGridConfig, LevelLayout, level_layouts, n_params
from .hashgrid_torch import hash_grid_encode
from .latent import LatentField, world_to_unit
from .mlp import CodeMLP
from .nerf import NeRFField, blob_bias, trunc_exp

__all__ = [
    "CodeMLP",
    "HashGrid",
    "HashGridConfig",
    "LatentField",
    "LevelLayout",
    "NeRFField",
    "blob_bias",
    "hash_grid_encode",
    "import_tcnn",
    "init_params",
    "level_layouts",
    "n_params",
    "tcnn_disabled_by_env",
    "trunc_exp",
    "world_to_unit",
]
