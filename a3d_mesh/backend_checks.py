"""The tiny cases every backend is checked on, and the agreement rule for accelerators.

:mod:`a3d_mesh.preflight` runs these before training (and ``a3d-mesh info``); the GPU check
reuses the cases. Each ``check_*`` runs one backend (``accelerated``: the CUDA library, else the
reference) forward and backward on a fixed random case and returns its outputs and gradients;
:func:`agree` decides whether an accelerator's results match the reference's (:class:`Mismatch`).
"""

from __future__ import annotations

import importlib.util
import math
from typing import Callable

import torch

from a3d_mesh.errors import A3DMeshError
from a3d_mesh.fields import hashgrid
from a3d_mesh.fields.hashgrid_layout import HashGridConfig
from a3d_mesh.fields.hashgrid_torch import hash_grid_encode
from a3d_mesh.geometry import marching
from a3d_mesh.geometry.tets import build_tet_grid
from a3d_mesh.render import _nvdr
from a3d_mesh.render import ops as render_ops

# Loose agreement thresholds: they catch a library that is wrong (garbage, wrong layout, wrong
# conventions), not rounding. Measured on an H200 at 512 px: 99.8 % equal triangle ids, gradient
# cosine >= 0.998 for nvdiffrast; tinycudann and kaolin equal the torch paths to float rounding.
MAX_ID_MISMATCH = 0.05  # fraction of covered pixels whose triangle differs
MAX_ABS_DIFF = 1e-2  # on images (where the triangle agrees) and features, values ~1
MIN_GRAD_COSINE = 0.9



def random_triangles(n_triangles: int = 8, device: torch.device | str = "cpu", seed: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Separate random triangles in clip space, for a rasteriser check.

    Args:
        n_triangles: T.
        device: device of the returned tensors.
        seed: seed of a private CPU generator (the same scene on every device).
    Returns:
        pos: ``[1, 3T, 4]`` float32 clip-space vertices (x, y in about [-0.95, 0.95], z/w in
            [-0.5, 0.5], w in [0.8, 1.2]: mild perspective, nothing clipped).
        tri: ``[T, 3]`` int64, triangle t uses vertices 3t, 3t+1, 3t+2.
        attr: ``[1, 3T, 3]`` float32 vertex colours in [0, 1].
    """
    gen = torch.Generator().manual_seed(int(seed))
    size = 1.2 / max(1.0, math.sqrt(n_triangles / 8.0))  # keep the screen from filling up
    centre = (torch.rand(n_triangles, 1, 2, generator=gen) * 2 - 1) * 0.6
    xy = centre + (torch.rand(n_triangles, 3, 2, generator=gen) - 0.5) * size
    z = torch.rand(n_triangles, 3, 1, generator=gen) - 0.5
    w = 0.8 + 0.4 * torch.rand(n_triangles, 3, 1, generator=gen)
    pos = torch.cat([xy * w, z * w, w], -1).reshape(1, -1, 4)
    tri = torch.arange(3 * n_triangles).reshape(-1, 3)
    attr = torch.rand(1, 3 * n_triangles, 3, generator=gen)
    return pos.to(device), tri.to(device), attr.to(device)


def random_points(n_points: int = 256, device: torch.device | str = "cpu", seed: int = 0) -> torch.Tensor:
    """``[N, 3]`` float32 points uniform in ``[0, 1]^3`` (hash-grid input frame), seeded on the CPU."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.rand(n_points, 3, generator=gen).to(device)


def sphere_tet_grid(cells: int = 6, device: torch.device | str = "cpu", seed: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A Kuhn tet grid (``cells`` cubes per axis, in ``[-0.5, 0.5]^3``) and a bumpy sphere's SDF.

    Not read from or written to the tet cache (no disk access).

    Returns:
        verts: ``[(cells+1)^3, 3]`` float32; tets: ``[6 cells^3, 4]`` int64;
        sdf: ``[V]`` float32, negative inside a sphere of radius about 0.3, with seeded noise of
        0.02 so that no vertex sits exactly on the surface.
    """
    verts_np, tets_np = build_tet_grid(int(cells))
    verts, tets = torch.from_numpy(verts_np), torch.from_numpy(tets_np)
    gen = torch.Generator().manual_seed(int(seed))
    sdf = verts.norm(dim=-1) - 0.3 + 0.02 * (torch.rand(verts.shape[0], generator=gen) - 0.5)
    return verts.to(device), tets.to(device), sdf.to(device)


# ----------------------------------------------------------------------------------------------
# Helpers shared by the checks.


class Mismatch(A3DMeshError, RuntimeError):
    """An accelerator ran but gave non-finite values or disagreed with the reference (the check
    functions raise it, in our own words; any other exception from them is the library failing
    outright)."""


def _finite(name: str, *tensors: torch.Tensor | None) -> None:
    for t in tensors:
        if t is None or not torch.isfinite(t).all():
            raise Mismatch(f"{name} gave {'no gradient' if t is None else 'non-finite values'}")


def _agree(name: str, acc: torch.Tensor, ref: torch.Tensor, acc_grad: torch.Tensor, ref_grad: torch.Tensor) -> None:
    """Outputs within :data:`MAX_ABS_DIFF`, gradients at cosine >= :data:`MIN_GRAD_COSINE`."""
    if acc.shape != ref.shape:
        raise Mismatch(f"{name} output shape {tuple(acc.shape)} != reference {tuple(ref.shape)}")
    diff = (acc.double().cpu() - ref.double().cpu()).abs().max().item() if acc.numel() else 0.0
    if not diff <= MAX_ABS_DIFF:
        raise Mismatch(f"{name} output differs from the reference by {diff:.3g} > {MAX_ABS_DIFF}")
    a, b = acc_grad.double().flatten().cpu(), ref_grad.double().flatten().cpu()
    cos = float(a @ b / (a.norm() * b.norm())) if a.norm() > 0 and b.norm() > 0 else float(a.norm() == b.norm())
    if not cos >= MIN_GRAD_COSINE:
        raise Mismatch(f"{name} gradient disagrees with the reference (cosine {cos:.3f} < {MIN_GRAD_COSINE})")


def _dist_version(dist: str) -> str:
    """``"dist version"`` when the distribution is installed, else ``dist``."""
    try:
        return f"{dist} {importlib.metadata.version(dist)}"
    except importlib.metadata.PackageNotFoundError:
        return dist


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken parent package or a half-initialised module
        return True


# ----------------------------------------------------------------------------------------------
# Rasteriser.


def _raster(pos: torch.Tensor, tri: torch.Tensor, attr: torch.Tensor, size: int, accelerated: bool
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """rasterize -> interpolate -> antialias (the ops a render uses) and d(loss)/d(pos, attr).

    The accelerator is called through :mod:`a3d_mesh.render._nvdr` (as ``backend="cuda"`` does)
    rather than ``ops`` so that the selection does not depend on ``available()``.
    """
    pos = pos.detach().clone().requires_grad_(True)
    attr = attr.detach().clone().requires_grad_(True)
    if accelerated:
        rast, _ = _nvdr.rasterize(pos, tri, (size, size), None, True)
        color, _ = _nvdr.interpolate(attr, rast, tri, None, None)
        image = _nvdr.antialias(color, rast, pos, tri, None, 1.0)
    else:
        rast, _ = render_ops.rasterize(pos, tri, (size, size), backend="cpu")
        color, _ = render_ops.interpolate(attr, rast, tri, backend="cpu")
        image = render_ops.antialias(color, rast, pos, tri, backend="cpu")
    weights = torch.linspace(0.5, 1.5, image.numel(), device=image.device).reshape(image.shape)
    (image * weights).sum().backward()
    return rast.detach(), image.detach(), torch.cat([pos.grad.flatten(), attr.grad.flatten()])


def check_rasteriser(device: torch.device, accelerated: bool, n_triangles: int = 8, size: int = 32
                     ) -> dict[str, torch.Tensor]:
    """Reference render of :func:`random_triangles`, and the accelerator's compared with it.

    Raises on failure (a :class:`Mismatch` when the accelerator runs but disagrees).
    Returns the reference's ``rast``, ``image`` and ``grad``.
    """
    pos, tri, attr = random_triangles(n_triangles, device)
    rast, image, grad = _raster(pos, tri, attr, size, accelerated=False)
    _finite("the CPU path", image, grad)
    if accelerated:
        a_rast, a_image, a_grad = _raster(pos, tri, attr, size, accelerated=True)
        _finite("nvdiffrast", a_rast, a_image, a_grad)
        if a_rast.shape != rast.shape:
            raise Mismatch(f"nvdiffrast raster shape {tuple(a_rast.shape)} != {tuple(rast.shape)}")
        ids, a_ids = rast[..., 3].cpu(), a_rast[..., 3].cpu()
        covered = (ids > 0) | (a_ids > 0)
        differ = (ids != a_ids) & covered
        frac = differ.sum().item() / max(1, covered.sum().item())
        if frac > MAX_ID_MISMATCH or covered.sum().item() == 0:
            raise Mismatch(f"nvdiffrast disagrees with the CPU path on {100 * frac:.1f} % of covered pixels")
        same = (~differ).unsqueeze(-1).to(image.device)
        _agree("nvdiffrast", a_image * same, image * same, a_grad, grad)
    return {"rast": rast, "image": image, "grad": grad}


# ----------------------------------------------------------------------------------------------
# Hash grid.

# Small, with dense and hashed levels (4, 8, 16, 32 vertices per axis; 32^3 > 2^12).
_CHECK_GRID = HashGridConfig(n_levels=4, n_features_per_level=2, log2_hashmap_size=12, base_resolution=4,
                             per_level_scale=2.0)


def check_hash_grid(device: torch.device, accelerated: bool, n_points: int = 256,
                    accelerator: str = "tinycudann") -> dict[str, torch.Tensor]:
    """Encode :func:`random_points` with the torch path, and with ``accelerator`` (``"tinycudann"``
    or ``"triton"``) compared with it.

    The table is filled with values in [-1, 1] (not tcnn's 1e-4 init) so the comparison means
    something. Returns the reference's ``features`` and ``grad`` (w.r.t. the table).
    """
    grid = hashgrid.HashGrid(_CHECK_GRID, backend="auto", seed=0).to(device)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        grid.params.copy_((torch.rand(grid.params.shape, generator=gen) * 2 - 1).to(device))
    x = random_points(n_points, device)
    weights = torch.linspace(0.5, 1.5, n_points * grid.n_output_dims, device=device).reshape(n_points, -1)

    def run(encode: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        grid.params.grad = None
        feats = encode(x)
        (feats.float() * weights).sum().backward()
        return feats.detach(), grid.params.grad.detach().clone()

    feats, grad = run(lambda p: hash_grid_encode(p, grid.params, grid.layouts, _CHECK_GRID.n_features_per_level))
    _finite("the torch hash grid", feats, grad)
    if accelerated:
        a_feats, a_grad = run(grid._forward_tcnn if accelerator == "tinycudann" else grid._forward_triton)
        _finite(accelerator, a_feats, a_grad)
        _agree(accelerator, a_feats, feats, a_grad, grad)
    return {"features": feats, "grad": grad}


def check_hash_grid_triton(device: torch.device, accelerated: bool, n_points: int = 256) -> dict[str, torch.Tensor]:
    """:func:`check_hash_grid` with the Triton kernels as the accelerator."""
    return check_hash_grid(device, accelerated, n_points, accelerator="triton")


# ----------------------------------------------------------------------------------------------
# Marching tets.


def check_marching(device: torch.device, accelerated: bool, cells: int = 6) -> dict[str, torch.Tensor]:
    """Extract :func:`sphere_tet_grid`'s surface with the torch path, and with kaolin compared with it.

    Returns the reference's ``verts``, ``faces`` and ``grad`` (w.r.t. the SDF).
    """
    verts, tets, sdf = sphere_tet_grid(cells, device)

    def run(impl: Callable[..., tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = sdf.detach().clone().requires_grad_(True)
        out_v, faces = impl(verts, tets, s, False)[:2]
        w = torch.linspace(0.5, 1.5, out_v.numel(), device=out_v.device).reshape(out_v.shape)
        (out_v * w).sum().backward()
        return out_v.detach(), faces.detach(), s.grad.detach()

    out_v, faces, grad = run(marching._marching_torch)
    _finite("the torch marching tets", out_v, grad)
    if faces.shape[0] == 0:
        raise RuntimeError("the torch marching tets extracted no surface from a sphere")
    if accelerated:
        a_v, a_faces, a_grad = run(marching._marching_kaolin)
        _finite("kaolin", a_v, a_grad)
        if a_faces.shape != faces.shape or not torch.equal(a_faces.cpu().long(), faces.cpu().long()):
            raise Mismatch(f"kaolin's faces differ from the torch path's ({a_faces.shape[0]} vs {faces.shape[0]})")
        _agree("kaolin", a_v, out_v, a_grad, grad)
    return {"verts": out_v, "faces": faces, "grad": grad}
