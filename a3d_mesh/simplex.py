"""Codes on the probability simplex: corners, per-step edge sampling, transition sweeps.

Object k of a set of K is the corner ``e_k``; the transition between objects i and j is the edge
``u(a) = a e_i + (1 - a) e_j``, a in [0, 1] (method note, section 1). Codes are ``[K]`` float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import torch

# A code for a whole object ([K]) or a code field evaluated at world points ([N, 3] -> [N, K]):
# hybrids are the set evaluated at a code field.
Code = Union[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


def corner(k: int, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The one-hot code e_k, shape [n]."""
    u = torch.zeros(n, device=device)
    u[k] = 1.0
    return u


def edge(i: int, j: int, a: float, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The code a e_i + (1 - a) e_j, shape [n]; a = 1 is object i, a = 0 is object j."""
    u = torch.zeros(n, device=device)
    u[i] += a
    u[j] += 1.0 - a
    return u


@dataclass
class CodeSamplingConfig:
    """Probabilities of a = 1, a = 0 and a ~ U(0, 1) for the pair drawn each step (they must sum to 1)."""

    p_corner_i: float = 0.25
    p_corner_j: float = 0.25
    p_interior: float = 0.5


@dataclass(frozen=True)
class CodeSample:
    """One step's code: the pair, the mixing weight and the code itself ([K])."""

    i: int
    j: int
    a: float
    u: torch.Tensor


def sample_code(n: int, cfg: CodeSamplingConfig, generator: torch.Generator) -> CodeSample:
    """Draw an unordered pair (i, j) of distinct prompts uniformly, then a per ``cfg``.

    With n = 1 the code is always e_0 (plain single-prompt text-to-3D). Uses only ``generator``
    so a resumed run draws exactly the same codes.
    """
    if n == 1:
        return CodeSample(0, 0, 1.0, corner(0, 1))
    pair = torch.randperm(n, generator=generator)[:2].tolist()
    i, j = sorted(pair)
    r = float(torch.rand((), generator=generator))
    if r < cfg.p_corner_i:
        a = 1.0
    elif r < cfg.p_corner_i + cfg.p_corner_j:
        a = 0.0
    else:
        a = float(torch.rand((), generator=generator))
    return CodeSample(i, j, a, edge(i, j, a, n))


def sweep(i: int, j: int, n: int, frames: int) -> list[torch.Tensor]:
    """Codes from object i (a = 1) to object j (a = 0) in ``frames`` evenly spaced steps."""
    return [edge(i, j, 1.0 - f / max(frames - 1, 1), n) for f in range(frames)]
