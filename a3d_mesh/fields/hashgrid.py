"""``HashGrid``: the multiresolution hash encoding module, tinycudann, Triton or pure torch.

All backends share one flat parameter vector ``params`` in tiny-cuda-nn's layout (see
:mod:`hashgrid_layout`), so a state dict trained with one loads into the other and gives the same
features. Backend choice happens per call: ``"auto"`` uses tinycudann when it imports, the input is
on a CUDA device, ``A3D_NO_TCNN`` is not set and :func:`disable_tcnn` was not called (the preflight
calls it when tinycudann fails or disagrees with the torch path); otherwise, on a CUDA input, the
Triton kernels of :mod:`hashgrid_triton` when ``triton`` imports, ``A3D_NO_TRITON`` is not set and
:func:`disable_triton` was not called (same preflight rule); everything else (CPU tensors included)
takes the torch path, which is the reference. ``triton`` is imported lazily, only for a CUDA input
(or a forced ``backend="triton"``), so ``import a3d_mesh`` never needs it.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch
from torch import nn

from .hashgrid_layout import INIT_RANGE, HashGridConfig, level_layouts, n_params
from .hashgrid_torch import hash_grid_encode

BACKENDS = ("auto", "torch", "tcnn", "triton")
_NO_TCNN_ENV = "A3D_NO_TCNN"
_TCNN_IMPORT_ERROR: str | None = None
_TCNN_DISABLED: str | None = None
NO_TRITON_ENV = "A3D_NO_TRITON"
_TRITON_IMPORT_ERROR: str | None = None
_TRITON_DISABLED: str | None = None


def tcnn_disabled_by_env() -> bool:
    """True when the user opted out of tinycudann with ``A3D_NO_TCNN`` set to a truthy value."""
    return os.environ.get(_NO_TCNN_ENV, "").strip().lower() not in ("", "0", "false", "no")


@functools.lru_cache(maxsize=1)
def import_tcnn() -> Any | None:
    """The ``tinycudann`` module, or None when it is not installed or cannot load (no CUDA).

    Cached: a failed import is not retried on every forward call.
    """
    global _TCNN_IMPORT_ERROR
    try:
        import tinycudann  # noqa: PLC0415  (optional CUDA dependency, imported lazily on purpose)
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        # tinycudann raises EnvironmentError (OSError) at import when torch has no CUDA device; a
        # build for another torch raises ImportError, AttributeError, ...
        _TCNN_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
        return None
    return tinycudann


def tcnn_import_error() -> str | None:
    """Why ``tinycudann`` did not import (``"Type: message"``), or None (after :func:`import_tcnn`)."""
    return _TCNN_IMPORT_ERROR


def disable_tcnn(reason: str) -> None:
    """Switch tinycudann off for ``"auto"`` grids for the rest of the process (they take the torch
    path). ``reason`` is one line, shown by :func:`tcnn_disabled` and in the preflight report."""
    global _TCNN_DISABLED
    _TCNN_DISABLED = reason or "disabled"


def tcnn_disabled() -> str | None:
    """The reason given to :func:`disable_tcnn`, or None while tinycudann may be used."""
    return _TCNN_DISABLED


def triton_disabled_by_env() -> bool:
    """True when the user opted out of the Triton kernels with ``A3D_NO_TRITON`` set to a truthy value."""
    return os.environ.get(NO_TRITON_ENV, "").strip().lower() not in ("", "0", "false", "no")


def triton_interpreting() -> bool:
    """True when Triton's interpreter is on (``TRITON_INTERPRET=1``): kernels then run on CPU
    tensors with numpy (slow; used to test the kernels without a GPU). Read when the kernels module
    is first imported, so it must be set before that."""
    return os.environ.get("TRITON_INTERPRET", "").strip() == "1"


@functools.lru_cache(maxsize=1)
def import_triton() -> Any | None:
    """The :mod:`hashgrid_triton` module (imports ``triton``), or None when triton is missing or the
    kernels cannot be defined. Cached like :func:`import_tcnn`."""
    global _TRITON_IMPORT_ERROR
    try:
        from . import hashgrid_triton  # noqa: PLC0415  (optional dependency, imported lazily on purpose)
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        _TRITON_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
        return None
    return hashgrid_triton


def triton_import_error() -> str | None:
    """Why the Triton kernels did not import (``"Type: message"``), or None (after :func:`import_triton`)."""
    return _TRITON_IMPORT_ERROR


def disable_triton(reason: str) -> None:
    """Switch the Triton kernels off for ``"auto"`` grids for the rest of the process, like
    :func:`disable_tcnn` (the preflight calls it when they fail or disagree with the torch path)."""
    global _TRITON_DISABLED
    _TRITON_DISABLED = reason or "disabled"


def triton_disabled() -> str | None:
    """The reason given to :func:`disable_triton`, or None while the Triton kernels may be used."""
    return _TRITON_DISABLED


def init_params(count: int, seed: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """tcnn's grid initialisation: ``count`` float32 values uniform in [-1e-4, 1e-4].

    Args:
        count: number of parameters.
        seed: seed of a private generator (reproducible); None draws from torch's global RNG.
        device: device of the returned tensor.
    """
    gen = None
    if seed is not None:
        gen = torch.Generator(device="cpu")
        gen.manual_seed(int(seed))
    values = torch.rand(count, generator=gen, dtype=torch.float32)
    return values.mul_(2.0 * INIT_RANGE).sub_(INIT_RANGE).to(device)


class HashGrid(nn.Module):
    """Multiresolution hash encoding ``[N, 3] in [0,1]^3 -> [N, n_levels * n_features_per_level]``.

    Attributes:
        cfg: the :class:`HashGridConfig`.
        params: one flat float32 ``nn.Parameter`` of length :func:`n_params`, tcnn layout.
        n_output_dims: ``n_levels * n_features_per_level``.
        backend: requested backend, ``"auto" | "torch" | "tcnn" | "triton"``.
    """

    def __init__(self, cfg: HashGridConfig, backend: str = "auto", seed: int | None = None) -> None:
        """Build the grid and initialise its table like tcnn does.

        Args:
            cfg: grid hyper-parameters.
            backend: ``"auto"`` (for CUDA inputs tinycudann when available, else the Triton
                kernels when available), ``"torch"`` (always the pure-torch path), ``"tcnn"``
                (tinycudann required; raises if missing) or ``"triton"`` (the Triton kernels
                required; CUDA inputs, or CPU inputs under ``TRITON_INTERPRET=1``).
            seed: seed of the table initialisation (None: torch's global RNG). The same seed gives
                the same table whatever the backend.
        """
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"HashGrid backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "tcnn" and import_tcnn() is None:
            raise RuntimeError("HashGrid(backend='tcnn'): tinycudann is not importable (needs CUDA torch)")
        if backend == "triton" and import_triton() is None:
            raise RuntimeError(f"HashGrid(backend='triton'): triton is not importable ({_TRITON_IMPORT_ERROR})")
        self.cfg = cfg
        self.backend = backend
        self.seed = seed
        self.layouts = level_layouts(cfg)
        self.n_output_dims = cfg.n_output_dims
        self.params = nn.Parameter(init_params(n_params(cfg), seed))
        # The tinycudann module is built lazily on the first CUDA call and kept out of the module
        # tree (a plain list) so that it neither owns nor duplicates ``params`` in the state dict.
        self._tcnn_holder: list[Any] = []

    def uses_tcnn(self, x: torch.Tensor) -> bool:
        """Whether a call with input ``x`` runs on tinycudann (``A3D_NO_TCNN`` and :func:`disable_tcnn`
        only affect "auto")."""
        if self.backend in ("torch", "triton") or not x.is_cuda:
            return False
        if self.backend == "auto" and (tcnn_disabled_by_env() or _TCNN_DISABLED is not None):
            return False
        return import_tcnn() is not None

    def uses_triton(self, x: torch.Tensor) -> bool:
        """Whether a call with input ``x`` runs on the Triton kernels: ``"triton"`` on CUDA (or any
        input under ``TRITON_INTERPRET=1``); ``"auto"`` on CUDA when tinycudann is not used and
        ``A3D_NO_TRITON`` / :func:`disable_triton` do not forbid it. Float32 tables only."""
        if self.backend in ("torch", "tcnn") or self.params.dtype != torch.float32:
            return False
        if self.backend == "triton":
            return x.is_cuda or triton_interpreting()
        if not x.is_cuda or triton_disabled_by_env() or _TRITON_DISABLED is not None or self.uses_tcnn(x):
            return False
        return import_triton() is not None

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        """Encode points.

        Args:
            x01: [N, 3] points in [0, 1]^3 (cast to float32; tcnn semantics outside the cube:
                indices wrap, no clamping).

        Returns:
            [N, n_output_dims] float32 features; column ``l * F + f`` is feature f of level l.
        """
        if x01.ndim != 2 or x01.shape[-1] != 3:
            raise ValueError(f"HashGrid expects points [N, 3], got {tuple(x01.shape)}")
        x01 = x01.to(torch.float32)
        if x01.shape[0] == 0:
            return x01.new_zeros(0, self.n_output_dims)
        if self.uses_tcnn(x01):
            return self._forward_tcnn(x01)
        if self.backend == "tcnn":
            raise RuntimeError("HashGrid(backend='tcnn') needs CUDA inputs; use backend='auto' for CPU")
        if self.uses_triton(x01):
            return self._forward_triton(x01)
        if self.backend == "triton":
            raise RuntimeError("HashGrid(backend='triton') needs CUDA inputs and a float32 table "
                               "(or TRITON_INTERPRET=1 for CPU inputs); use backend='auto' for CPU")
        return hash_grid_encode(x01, self.params, self.layouts, self.cfg.n_features_per_level)

    def _forward_tcnn(self, x01: torch.Tensor) -> torch.Tensor:
        """tinycudann path: its ``Encoding`` evaluated with this module's ``params``."""
        if not self._tcnn_holder:
            tcnn = import_tcnn()
            with torch.cuda.device(x01.device):
                encoding = tcnn.Encoding(
                    n_input_dims=3,
                    encoding_config=self.cfg.tcnn_config(),
                    seed=1337 if self.seed is None else int(self.seed),
                    dtype=torch.float32,
                )
            if encoding.params.numel() != self.params.numel():
                raise RuntimeError(
                    f"tinycudann grid has {encoding.params.numel()} params, expected {self.params.numel()}"
                )
            self._tcnn_holder.append(encoding)
        encoding = self._tcnn_holder[0]
        # Rebind every call: ``params`` may have been replaced (load, .to(), optimiser tricks).
        encoding.params = self.params
        return encoding(x01.contiguous()).float()

    def _forward_triton(self, x01: torch.Tensor) -> torch.Tensor:
        """Triton path: :func:`hashgrid_triton.hash_grid_encode_triton` on this module's ``params``."""
        module = import_triton()
        if module is None:
            raise RuntimeError(f"the Triton hash grid is not importable ({_TRITON_IMPORT_ERROR})")
        return module.hash_grid_encode_triton(x01, self.params, self.layouts, self.cfg.n_features_per_level)

    def extra_repr(self) -> str:
        cfg = self.cfg
        return (
            f"levels={cfg.n_levels}, features={cfg.n_features_per_level}, "
            f"log2_T={cfg.log2_hashmap_size}, base={cfg.base_resolution}, "
            f"scale={cfg.per_level_scale}, params={self.params.numel()}, backend={self.backend}"
        )
