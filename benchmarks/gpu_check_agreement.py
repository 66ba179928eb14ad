"""Section (a) of ``benchmarks/gpu_check.py``: each CUDA backend against the CPU reference.

On the same inputs: the rasteriser (rasterize + interpolate + antialias on random scenes of 2880
triangles: triangle ids, z/w and barycentrics where the ids agree, gradient of a weighted image sum
w.r.t. the clip-space vertices), the hash grid (tinycudann and the Triton kernels vs torch: features
and parameter gradients; plus the Triton kernels' fwd+bwd points/s against the torch path on the
same GPU, an ``info`` row with the issue-25 target of >= 10x) and marching tets (kaolin vs torch: faces, vertices, SDF gradient). The torch paths run
on the GPU are compared with the CPU too. A library that is not installed is a row saying so, not a
failure; one that is installed but does not import is a failure. On a CPU-only machine the same
code compares the CPU path (C visibility + C pixel kernels) with independent reference math
(OpenGL or torch visibility + the torch pixel math), and the ``auto`` selections of the hash grid
and marching tets with their torch references. Thresholds are the named constants below.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import os
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import torch

from a3d_mesh import render
from a3d_mesh.fields import HashGrid, HashGridConfig, hashgrid, import_tcnn, n_params
from a3d_mesh.geometry import marching, marching_tets
from a3d_mesh.backend_checks import random_points, sphere_tet_grid
from a3d_mesh.render import _nvdr, _raster_gl

# Thresholds. Measured on an H200 (nvdiffrast 0.4.0 and diffrp-nvdiffrast 0.3.3.1 vs the CPU path at
# 512 px, on 4 scenes of three interpenetrating icosphere blobs, 2880 triangles, from
# tests/test_render_agreement.py; ``blob_scene`` builds the same kind of scene from lat-long
# spheres; /work/shared/GPU-NOTES.md, 2026-12-04): ids equal on 99.77-99.82 % of
# covered pixels (the rest: pixel centres within nvdiffrast's fixed-point snapping of an edge),
# |dz| <= 3.6e-7, |duv| <= 6.5e-5, gradient cosine 0.998-0.9997 (3-6 % relative error, at silhouette
# pixels). The limits leave ~2-10x room over those and still catch a wrong convention (a row flip,
# a half-pixel offset or a depth test the wrong way round costs tens of per cent of the ids).
RASTER_MIN_IDS_EQUAL = 0.995
RASTER_MAX_DZ = 1e-5  # also the limit of tests/test_render_agreement.py against OpenGL
RASTER_MAX_DUV = 1e-3
RASTER_MIN_GRAD_COSINE = 0.99
# Not measured yet (tinycudann was not installed on the lent GPU). HashGrid builds its tcnn Encoding
# in float32; what may differ is float32 arithmetic order in the cell positions (scale ~2^11 at the
# finest level: ~1e-4 of a cell) times value slopes of ~2 per cell (table in [-1, 1]), so 1e-3.
# A wrong layout, hash or level scale gives O(1) errors.
GRID_MAX_ABS = 1e-3
GRID_MIN_GRAD_COSINE = 0.99
# The Triton hash grid's speed-up target over the torch path on the same GPU (issue 25), fwd+bwd
# points/s at the default 16 x 2 grid. Reported (info), not judged: a slow kernel is not a wrong one.
GRID_TRITON_TARGET_SPEEDUP = 10.0
GRID_SPEED_POINTS = 2**18
# Not measured yet (kaolin not installed there). The torch path copies kaolin's table and operation
# order (bit-identical by design); 1e-6 allows a fused multiply-add in kaolin's kernel (a few ulps
# at |x| <= 1). Faces must be identical.
MARCH_MAX_ABS = 1e-6
MARCH_MIN_GRAD_COSINE = 0.9999


@dataclasses.dataclass
class Row:
    """One line of the table. ``status``: PASS, FAIL, info or "not installed"."""

    section: str
    check: str
    status: str
    measured: str
    limit: str = ""
    peak: str = ""
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


def judged(section: str, check: str, value: float, limit: float, at_least: bool, fmt: str = ".3g",
           **data: Any) -> Row:
    """PASS when ``value >= limit`` (``at_least``) or ``value <= limit``; NaN fails."""
    ok = value >= limit if at_least else value <= limit
    return Row(section, check, "PASS" if ok else "FAIL", format(value, fmt),
               f"{'>=' if at_least else '<='} {format(limit, fmt)}", data={"value": value, "limit": limit, **data})


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of two flattened tensors in float64 (1.0 when both are zero, 0.0 when one is)."""
    a, b = a.detach().double().flatten().cpu(), b.detach().double().flatten().cpu()
    na, nb = a.norm().item(), b.norm().item()
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(a @ b) / (na * nb)


def grad_of(leaf: torch.Tensor) -> torch.Tensor:
    """``leaf.grad`` as float32 on the CPU; zeros when a backend gave none (its cosine is then 0: a failure)."""
    return (leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)).detach().float().cpu()


@contextlib.contextmanager
def env(**values: str) -> Iterator[None]:
    """Environment variables set for the duration (the render ops read them at call time)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def guarded(section: str, what: str, fn: Callable[[], list[Row]]) -> list[Row]:
    """``fn()``'s rows, or one FAIL row ``"<what>: crashed"`` naming the exception (traceback on
    stderr) when it raises: a crash in one part must still give the table."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        first = (str(e).strip().splitlines() or [""])[0]
        return [Row(section, f"{what}: crashed", "FAIL", f"{type(e).__name__}: {first}"[:200])]


# ---------------------------------------------------------------------------------------------
# Scenes, comparisons, rows


def blob_scene(seed: int, lat: int = 21, lon: int = 24) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three interpenetrating random blobs (bumped, rotated, shifted spheres of ``2 lon (lat - 1)``
    triangles each; 2880 in all by default) 3.5 units in front of a 40-degree perspective camera.

    Dense overlap matters: the depth test decides most covered pixels, so a wrong depth convention
    changes most ids (preflight's sparse ``random_triangles`` cover ~17 % with few occlusions).
    Returns CPU tensors ``pos [1, V, 4]`` (clip space), ``tri [T, 3]`` int64, ``col [1, V, 3]``.
    """
    gen = torch.Generator().manual_seed(seed)
    theta = torch.linspace(0, math.pi, lat + 1)[1:-1]
    phi = torch.arange(lon) * (2 * math.pi / lon)
    ring = torch.stack([theta.sin()[:, None] * phi.cos(), theta.cos()[:, None].expand(-1, lon),
                        theta.sin()[:, None] * phi.sin()], -1).reshape(-1, 3)
    sphere = torch.cat([torch.tensor([[0.0, 1.0, 0.0]]), ring, torch.tensor([[0.0, -1.0, 0.0]])])
    j = torch.arange(lon)
    a = 1 + torch.arange(lat - 2)[:, None] * lon + j  # [lat-2, lon] ring vertex, next ring is + lon
    b = 1 + torch.arange(lat - 2)[:, None] * lon + (j + 1) % lon
    bottom = sphere.shape[0] - 1
    faces = torch.cat([torch.stack([torch.zeros_like(j), 1 + j, 1 + (j + 1) % lon], 1),
                       torch.stack([a, a + lon, b], -1).reshape(-1, 3),
                       torch.stack([b, a + lon, b + lon], -1).reshape(-1, 3),
                       torch.stack([bottom - lon + (j + 1) % lon, bottom - lon + j, torch.full_like(j, bottom)], 1)])
    verts, tris, off = [], [], 0
    for _ in range(3):
        v = sphere * (1 + 0.25 * torch.randn(sphere.shape[0], 1, generator=gen)).clamp(0.5, 1.5)
        q, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen))
        verts.append(v @ q.T * 0.6 + (torch.rand(3, generator=gen) - 0.5) * 1.2)
        tris.append(faces + off)
        off += sphere.shape[0]
    v = torch.cat(verts) + torch.tensor([0.0, 0.0, -3.5])
    f = 1.0 / math.tan(math.radians(40.0) / 2)
    near, far = 0.1, 10.0
    proj = torch.tensor([[f, 0, 0, 0], [0, f, 0, 0],
                         [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)], [0, 0, -1, 0]])
    pos = torch.cat([v, torch.ones(v.shape[0], 1)], 1) @ proj.T
    return pos[None].contiguous(), torch.cat(tris), torch.rand(1, v.shape[0], 3, generator=gen)


def accelerator(name: str, module: str, load_error: Callable[[], str | None]) -> tuple[bool, list[Row]]:
    """(usable, rows) for a CUDA library: not installed is a row saying so; installed but failing
    to import is a failure (a run would quietly fall back to the reference)."""
    try:
        installed = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken parent package: it is there, the import will say why
        installed = True
    if not installed:
        return False, [Row("agreement", name, "not installed", "the reference is used")]
    if (err := load_error()) is not None:
        return False, [Row("agreement", name, "FAIL", f"installed, does not import: {err}"[:200])]
    return True, []


def raster_pass(pos: torch.Tensor, tri: torch.Tensor, col: torch.Tensor, weight: torch.Tensor, res: int,
                backend: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """rasterize -> interpolate -> antialias on ``device``; ``(rast [1, res, res, 4], d(sum(weight *
    image))/d(pos) [1, V, 4])``, both on the CPU."""
    p = pos.to(device, copy=True).requires_grad_(True)  # a fresh leaf: no gradient carried between passes
    t, c = tri.to(device), col.to(device)
    rast, _ = render.rasterize(p, t, (res, res), backend=backend)
    img, _ = render.interpolate(c, rast, t, backend=backend)
    out = render.antialias(img, rast, p, t, backend=backend)
    (out * weight.to(device)).sum().backward()
    return rast.detach().cpu(), grad_of(p)


def raster_metrics(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
    """ids-equal fraction of covered pixels, max |dz| and |duv| where the ids agree, gradient cosine."""
    ids_a, ids_b = a[0][..., 3].round().long() - 1, b[0][..., 3].round().long() - 1
    covered = (ids_a >= 0) | (ids_b >= 0)
    same = (ids_a == ids_b) & (ids_a >= 0)
    diff = (a[0] - b[0]).abs()[same]  # [N, 4]
    return {"ids": (ids_a == ids_b)[covered].float().mean().item() if covered.any() else 0.0,
            "dz": diff[:, 2].max().item() if len(diff) else math.nan,
            "duv": diff[:, :2].max().item() if len(diff) else math.nan,
            "cos": cosine(a[1], b[1])}


def raster_rows(device: torch.device, scenes: int, res: int) -> list[Row]:
    """Rows for each (candidate, reference) rasteriser pair, worst case over ``scenes`` scenes."""
    rows: list[Row] = []
    if device.type == "cuda":
        # Reference: the CPU path on CPU tensors, as a CPU machine runs it.
        ref_label, ref_env = "cpu path", {}
        pairs = [("torch path on cuda", "cpu")]
        usable, rows = accelerator("rasteriser nvdiffrast", "nvdiffrast",
                                   lambda: None if _nvdr.module() is not None else _nvdr.import_error() or "?")
        if usable:
            pairs.insert(0, ("nvdiffrast", "cuda"))
    else:
        # Reference: independent visibility (OpenGL if a context opens, else the torch engine) and
        # the torch pixel math, against the C engine and C kernels a CPU run uses.
        engine = "gl" if _raster_gl.available() else "torch"
        ref_label, ref_env = f"{engine} visibility + torch math", {"A3D_RENDER_VISIBILITY": engine,
                                                                      "A3D_RENDER_KERNELS": "torch"}
        pairs = [(f"cpu path ({render.visibility_engine()} visibility + C kernels)", "cpu")]
    results: dict[str, list[dict[str, float]]] = {label: [] for label, _ in pairs}
    for seed in range(scenes):
        pos, tri, col = blob_scene(seed)
        weight = torch.rand(1, res, res, 3, generator=torch.Generator().manual_seed(100 + seed))
        with env(**ref_env):
            ref = raster_pass(pos, tri, col, weight, res, "cpu", torch.device("cpu"))
        for label, backend in pairs:
            results[label].append(raster_metrics(raster_pass(pos, tri, col, weight, res, backend, device), ref))
    for label, ms in results.items():
        name = f"rasteriser {label} vs {ref_label}"
        worst = {"ids": min(m["ids"] for m in ms), "dz": max(m["dz"] for m in ms),
                 "duv": max(m["duv"] for m in ms), "cos": min(m["cos"] for m in ms)}
        rows += [judged("agreement", f"{name}: ids equal", worst["ids"], RASTER_MIN_IDS_EQUAL, True, ".5f"),
                 judged("agreement", f"{name}: max abs dz", worst["dz"], RASTER_MAX_DZ, False, ".2e"),
                 judged("agreement", f"{name}: max abs duv", worst["duv"], RASTER_MAX_DUV, False, ".2e"),
                 judged("agreement", f"{name}: grad cosine", worst["cos"], RASTER_MIN_GRAD_COSINE, True, ".5f")]
        for row in rows[-4:]:
            row.data.update(scenes=scenes, resolution=res, per_scene=ms)
    return rows


def grid_rows(device: torch.device, n_points: int) -> list[Row]:
    """Hash grid: features max |d| and parameter-gradient cosine against torch on the CPU."""
    cfg = HashGridConfig()
    pairs = [("torch on cpu (auto)", "auto")] if device.type == "cpu" else [("torch on cuda", "torch")]
    rows: list[Row] = []
    if device.type == "cuda":
        usable, rows = accelerator("hash grid tinycudann", "tinycudann",
                                   lambda: None if import_tcnn() is not None else hashgrid.tcnn_import_error() or "?")
        if usable:
            pairs.insert(0, ("tinycudann", "tcnn"))
        usable, triton_rows = accelerator(
            "hash grid triton", "triton",
            lambda: None if hashgrid.import_triton() is not None else hashgrid.triton_import_error() or "?")
        rows += triton_rows
        if usable:
            pairs.insert(0, ("triton", "triton"))
    x = random_points(n_points, "cpu", seed=0)
    upstream = torch.randn(n_points, cfg.n_output_dims, generator=torch.Generator().manual_seed(1))
    params = torch.rand(n_params(cfg), generator=torch.Generator().manual_seed(2)) * 2 - 1

    def run(backend: str, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        grid = HashGrid(cfg, backend=backend, seed=0).to(dev)
        with torch.no_grad():  # values in [-1, 1], not the 1e-4 init: the comparison must mean something
            grid.params.copy_(params.to(dev))
        out = grid(x.to(dev))
        (out.float() * upstream.to(dev)).sum().backward()
        return out.detach().float().cpu(), grad_of(grid.params)

    ref = run("torch", torch.device("cpu"))
    for label, backend in pairs:
        got = run(backend, device)
        name = f"hash grid {label} vs torch on cpu"
        rows += [judged("agreement", f"{name}: features max abs diff", (got[0] - ref[0]).abs().max().item(),
                        GRID_MAX_ABS, False, ".2e", points=n_points),
                 judged("agreement", f"{name}: grad cosine", cosine(got[1], ref[1]), GRID_MIN_GRAD_COSINE, True, ".6f")]
    if any(backend == "triton" for _, backend in pairs):
        rows.append(grid_speed_row(device, cfg))
    return rows


def grid_speed_row(device: torch.device, cfg: HashGridConfig, n_points: int = GRID_SPEED_POINTS,
                   repeats: int = 5) -> Row:
    """Fwd+bwd points/s of the Triton kernels and of the torch path on ``device`` (CUDA), measured
    in the same call, as an ``info`` row: the ratio against :data:`GRID_TRITON_TARGET_SPEEDUP`."""
    x = torch.rand(n_points, 3, device=device, generator=torch.Generator(device).manual_seed(3))
    upstream = torch.randn(n_points, cfg.n_output_dims, device=device)
    rates = {}
    for backend in ("torch", "triton"):
        grid = HashGrid(cfg, backend=backend, seed=0).to(device)
        times = []
        for i in range(repeats + 1):  # the first call compiles (Triton) / warms the allocator
            torch.cuda.synchronize(device)
            start = time.perf_counter()
            grid.params.grad = None
            (grid(x) * upstream).sum().backward()
            torch.cuda.synchronize(device)
            if i:
                times.append(time.perf_counter() - start)
        rates[backend] = n_points / sorted(times)[len(times) // 2]
    ratio = rates["triton"] / rates["torch"]
    return Row("agreement", "hash grid triton speed (fwd+bwd, 16x2 grid) vs torch on cuda", "info",
               f"{ratio:.1f}x ({rates['triton'] / 1e6:.1f} vs {rates['torch'] / 1e6:.2f} Mpts/s)",
               f"target >= {GRID_TRITON_TARGET_SPEEDUP:g}x",
               data={"triton_pts_per_s": rates["triton"], "torch_pts_per_s": rates["torch"], "ratio": ratio,
                     "points": n_points})


def march_rows(device: torch.device, cells: int) -> list[Row]:
    """Marching tets on a bumpy sphere: identical faces, vertices within ``MARCH_MAX_ABS``, SDF-gradient cosine."""
    pairs = [("torch on cpu (auto)", "auto")] if device.type == "cpu" else [("torch on cuda", "cpu")]
    rows: list[Row] = []
    if device.type == "cuda":
        usable, rows = accelerator("marching tets kaolin", "kaolin", marching.kaolin_import_error)
        if usable:
            pairs.insert(0, ("kaolin", "cuda"))
    verts, tets, sdf = sphere_tet_grid(cells, "cpu", seed=0)

    def run(backend: str, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = sdf.to(dev, copy=True).requires_grad_(True)
        v, f = marching_tets(verts.to(dev), tets.to(dev), s, backend=backend)[:2]
        w = torch.linspace(0.5, 1.5, v.numel(), device=dev).reshape(v.shape)
        (v * w).sum().backward()
        return v.detach().cpu(), f.detach().cpu().long(), grad_of(s)

    ref = run("cpu", torch.device("cpu"))
    for label, backend in pairs:
        got = run(backend, device)
        name = f"marching tets {label} vs torch on cpu"
        same = torch.equal(got[1], ref[1])
        vdiff = (got[0] - ref[0]).abs().max().item() if same else math.inf
        rows += [Row("agreement", f"{name}: faces identical", "PASS" if same else "FAIL",
                     f"{got[1].shape[0]} vs {ref[1].shape[0]} faces", "identical",
                     data={"faces": got[1].shape[0], "ref_faces": ref[1].shape[0], "cells": cells}),
                 judged("agreement", f"{name}: verts max abs diff", vdiff, MARCH_MAX_ABS, False, ".2e"),
                 judged("agreement", f"{name}: grad cosine", cosine(got[2], ref[2]), MARCH_MIN_GRAD_COSINE, True,
                        ".6f")]
    return rows


def agreement_rows(device: torch.device) -> list[Row]:
    """Section (a): each backend on its own, so that one crashing does not hide the others."""
    cuda = device.type == "cuda"
    return (guarded("agreement", "rasteriser", lambda: raster_rows(device, 4 if cuda else 2, 512 if cuda else 128))
            + guarded("agreement", "hash grid", lambda: grid_rows(device, 2**16 if cuda else 2**12))
            + guarded("agreement", "marching tets", lambda: march_rows(device, 64 if cuda else 16)))
