"""Benchmark the export pipeline: time and peak memory of cleanup / unwrap / bake / write.

Usage: python benchmarks/export.py [--faces 20000 200000] [--texture-size 1024]

The test mesh is a closed bumpy torus (no poles, no degenerate faces) with about the requested
number of faces. Peak memory is the peak resident set size of this process during the stage
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

from a3d_mesh.export import bake_texture, clean_mesh, texture_png_bytes, unwrap, vertex_normals, write_glb, write_obj


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


def run(n_faces: int, texture_size: int, out: Path) -> list[tuple[str, int, float, float, str]]:
    verts, faces = bumpy_torus(n_faces)
    rows = []
    (cv, cf, _), dt, mem = measure(lambda: clean_mesh(verts, faces))
    rows.append(("cleanup", cf.shape[0], dt, mem, ""))
    uvr, dt, mem = measure(lambda: unwrap(cv, cf, timeout_s=600, texture_size=texture_size))
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    rows.append(("unwrap", uvr.faces.shape[0], dt, mem, f"{uvr.method}; child peak {child:.0f} MiB"))
    tex, dt, mem = measure(lambda: bake_texture(uvr.verts, uvr.faces, uvr.uv, field, texture_size))
    rows.append(("bake", uvr.faces.shape[0], dt, mem, f"{texture_size}^2"))
    normals = vertex_normals(uvr.source_verts, uvr.source_faces)[uvr.vmapping]
    png, dt, mem = measure(lambda: texture_png_bytes(tex))
    rows.append(("png encode", uvr.faces.shape[0], dt, mem, f"{len(png) / 2**20:.1f} MiB"))
    args = (uvr.verts, uvr.faces, uvr.uv, normals, png)
    p, dt, mem = measure(lambda: write_glb(out / f"t{n_faces}.glb", *args))
    rows.append(("write glb", uvr.faces.shape[0], dt, mem, f"{p.stat().st_size / 2**20:.1f} MiB"))
    parts, dt, mem = measure(lambda: write_obj(out / f"t{n_faces}", f"t{n_faces}", *args))
    rows.append(("write obj", uvr.faces.shape[0], dt, mem, f"{parts['obj'].stat().st_size / 2**20:.1f} MiB"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, nargs="+", default=[20_000, 200_000])
    ap.add_argument("--texture-size", type=int, default=1024)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, texture {args.texture_size}")
    print(f"{'stage':<11} {'faces':>8} {'seconds':>8} {'peak MiB':>9}  note")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.faces:
            for stage, f, dt, mem, note in run(n, args.texture_size, Path(tmp)):
                print(f"{stage:<11} {f:>8} {dt:>8.2f} {mem:>9.0f}  {note}", flush=True)


if __name__ == "__main__":
    main()
