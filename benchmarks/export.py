"""Benchmark the export pipeline: time and peak memory of cleanup / unwrap / bake / write.

Usage: python benchmarks/export.py [--faces 20000 200000] [--toy chair table] [--glb runs/toy/export/*.glb]
       [--texture-size 1024] [--charts 2 4 auto]

The test meshes are closed bumpy tori (no poles, no degenerate faces) with about the requested
numbers of faces, and the toy world's objects re-meshed by marching tets on the toy preset's
grid (40), as a run makes them, and any GLB (``--glb``: a run's exports, welded again by the
cleanup). The unwrap row also gives the atlas utilisation (fraction of
texels the charts cover) and the texel density in texels per metre, with the mesh scaled to
1 m tall as a one-object set is exported by default. Peak memory is the peak resident set size of this process during the stage
above its level when the stage started, sampled every 5 ms from /proc (Linux); for ``unwrap``
the xatlas child's peak RSS (getrusage of children, so a running maximum over all children
so far) is shown too. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import math
import resource
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from a3d_mesh.export import (bake_texture, clean_mesh, set_transform, texture_png_bytes, unwrap, vertex_normals,
                             write_glb, write_obj)
from a3d_mesh.export.uv import CHART_SETTINGS, atlas_utilisation, texels_per_unit
from a3d_mesh.meshio import load_mesh


def bumpy_torus(n_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """A closed torus grid with ``2 * n * m ~= n_faces`` faces, radii 0.35 / 0.12, bumps on the tube."""
    n = max(8, int(math.sqrt(n_faces / 2 * 3)))
    m = max(4, int(n_faces / 2 / n))
    ring = lambda k: np.linspace(0, 2 * np.pi, k, endpoint=False)  # noqa: E731
    a, b = np.meshgrid(ring(n), ring(m), indexing="ij")
    r = 0.12 * (1 + 0.15 * np.sin(5 * a) * np.sin(3 * b))
    rho = 0.35 + r * np.cos(b)
    verts = np.stack([rho * np.cos(a), r * np.sin(b), rho * np.sin(a)], -1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(n), np.arange(m), indexing="ij")
    v00, v10 = i * m + j, ((i + 1) % n) * m + j
    v01, v11 = i * m + (j + 1) % m, ((i + 1) % n) * m + (j + 1) % m
    faces = np.concatenate([np.stack([v00, v01, v10], -1).reshape(-1, 3), np.stack([v10, v01, v11], -1).reshape(-1, 3)])
    return verts.astype(np.float32), faces.astype(np.int64)


def toy_marching_mesh(family: str = "chair", grid: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The toy world's mid-range ``family`` (a3d_mesh.toy) re-meshed by marching tets, as a run makes it.

    The toy mesh's signed distance is sampled on the DMTet grid of nominal resolution ``grid``
    scaled to the world cube [-1, 1]^3 (bound 1), then extracted with :func:`marching_tets`: one
    welded component (legs fused to the seat), ~8.4k faces for the chair at grid 64. World frame,
    +Y up; ``(verts [V,3] float32, faces [F,3] int64)``.
    """
    from a3d_mesh.geometry import marching_tets, mesh_sdf, tet_grid
    from a3d_mesh.toy.shapes import template

    obj = template(family)
    grid_v, tets = tet_grid(grid)
    pts = grid_v * 2.0  # unit cube -> world cube, as DMTetField does for bound = 1
    # The level is offset by a hair: grid planes that coincide with the boxes' faces would put exact
    # zeros on grid vertices and many coincident marching vertices, which a learned SDF never has.
    v, f = marching_tets(pts, tets, mesh_sdf(obj.verts, obj.faces, pts) - 0.004, backend="cpu")
    return v.numpy().astype(np.float32), f.numpy().astype(np.int64)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


def measure(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """Run ``fn``; return ``(result, seconds, peak RSS increase in MiB)``."""
    base, peak, stop = _rss_bytes(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.005)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    stop.set()
    t.join()
    peak[0] = max(peak[0], _rss_bytes())
    return out, dt, (peak[0] - base) / 2**20


def field(p: torch.Tensor) -> torch.Tensor:
    return 0.5 + 0.5 * torch.sin(8 * p)


def run(mesh: str, texture_size: int, out: Path, charts: list[str]) -> list[tuple[str, int, float, float, str]]:
    """Time each stage on ``mesh``: a face count (bumpy torus) or a toy family name (marching tets).
    The unwrap is timed once per entry of ``charts``: ``"N"``, every one of the first N of
    ``CHART_SETTINGS``; ``"auto"``, the export's own rule (the first ``FIRST_SETTINGS``, the rest
    only below ``UTILISATION_TARGET``). The stages after it use the last one's atlas."""
    if mesh.isdigit():
        verts, faces = bumpy_torus(int(mesh))
    elif mesh.endswith(".glb"):
        verts, faces = (t.numpy() for t in load_mesh(Path(mesh)))
    else:
        verts, faces = toy_marching_mesh(mesh, grid=40)
    rows = []
    (cv, cf, _), dt, mem = measure(lambda: clean_mesh(verts, faces))
    rows.append(("cleanup", cf.shape[0], dt, mem, ""))
    first = None
    for n in charts:
        kw = {} if n == "auto" else {"chart_settings": CHART_SETTINGS[:int(n)], "target": 1.0}
        uvr, dt, mem = measure(lambda: unwrap(cv, cf, timeout_s=600, texture_size=texture_size, **kw))
        first = dt if first is None else first
        child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        util = atlas_utilisation(uvr.uv, uvr.faces, texture_size)
        metres = set_transform([cv], height_m=1.0).scale  # world units -> metres, 1 m tall
        tpm = texels_per_unit(uvr.verts, uvr.faces, uvr.uv, texture_size) / metres
        rows.append((f"unwrap/{n}", uvr.faces.shape[0], dt, mem,
                     f"{uvr.method}; child peak {child:.0f} MiB; utilisation {util:.1%}; {tpm:.0f} texels/m; "
                     f"time x{dt / first:.2f} of unwrap/{charts[0]}"))
    tex, dt, mem = measure(lambda: bake_texture(uvr.verts, uvr.faces, uvr.uv, field, texture_size))
    rows.append(("bake", uvr.faces.shape[0], dt, mem, f"{texture_size}^2"))
    normals = vertex_normals(uvr.source_verts, uvr.source_faces)[uvr.vmapping]
    png, dt, mem = measure(lambda: texture_png_bytes(tex))
    rows.append(("png encode", uvr.faces.shape[0], dt, mem, f"{len(png) / 2**20:.1f} MiB"))
    args = (uvr.verts, uvr.faces, uvr.uv, normals, png)
    p, dt, mem = measure(lambda: write_glb(out / f"t{Path(mesh).stem}.glb", *args))
    rows.append(("write glb", uvr.faces.shape[0], dt, mem, f"{p.stat().st_size / 2**20:.1f} MiB"))
    parts, dt, mem = measure(lambda: write_obj(out / f"t{Path(mesh).stem}", f"t{Path(mesh).stem}", *args))
    rows.append(("write obj", uvr.faces.shape[0], dt, mem, f"{parts['obj'].stat().st_size / 2**20:.1f} MiB"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, nargs="+", default=[20_000, 200_000])
    ap.add_argument("--toy", nargs="*", default=["chair"], help="toy families, re-meshed by marching tets (grid 40)")
    ap.add_argument("--texture-size", type=int, default=1024)
    ap.add_argument("--glb", nargs="*", default=[], help="GLB files (e.g. a run's exports)")
    ap.add_argument("--charts", nargs="+", default=["auto"],
                    help="unwrap with every one of the first N chart settings, or 'auto' (the export's rule), "
                         "each in turn")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, texture {args.texture_size}")
    print(f"{'stage':<11} {'faces':>8} {'seconds':>8} {'peak MiB':>9}  note")
    with tempfile.TemporaryDirectory() as tmp:
        for mesh in [str(n) for n in args.faces] + list(args.toy) + list(args.glb):
            for stage, f, dt, mem, note in run(mesh, args.texture_size, Path(tmp), args.charts):
                print(f"{stage:<11} {f:>8} {dt:>8.2f} {mem:>9.0f}  {note}", flush=True)


if __name__ == "__main__":
    main()
