"""Benchmark of the DMTet geometry ops on this machine; prints a table (no assertions).

    python benchmarks/geometry.py [--resolutions 64 128 256] [--device cpu|cuda] [--field]

Rows: tet-grid build (uncached; time and peak numpy memory by tracemalloc), cached load, unique
edges, marching tets of a sphere, mesh signed distance throughput, and with ``--field`` one
DMTetField forward + extraction with the reference hash-grid settings.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Callable

import torch
import trimesh

from a3d_mesh.geometry import DMTetField, marching_tets, mesh_sdf, tet_edges, tet_grid
from a3d_mesh.geometry.tets import build_tet_grid, cells_per_axis


def timed(fn: Callable[[], object], device: torch.device, repeat: int = 1) -> tuple[float, object]:
    """Best wall time in seconds over ``repeat`` runs (CUDA synchronised) and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def row(name: str, res: int, seconds: float, extra: str) -> None:
    print(f"| {name:<26} | {res:>4} | {seconds * 1e3:>10.1f} | {extra:<40} |")


def bench_resolution(res: int, device: torch.device, cache: Path, with_field: bool) -> None:
    n = cells_per_axis(res)
    tracemalloc.start()
    t_build, _ = timed(lambda: build_tet_grid(n), torch.device("cpu"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    verts, tets = tet_grid(res, cache)  # writes the cache
    row("tet_grid build (uncached)", res, t_build,
        f"V={verts.shape[0]:,} T={tets.shape[0]:,} peak {peak / 2**20:.0f} MiB")
    t_load, _ = timed(lambda: tet_grid(res, cache), torch.device("cpu"), repeat=3)
    size = sum(p.stat().st_size for p in cache.glob(f"kuhn_*_{n}.npz"))
    row("tet_grid cached load", res, t_load, f"file {size / 2**20:.0f} MiB")
    verts, tets = verts.to(device), tets.to(device)
    t_edges, edges = timed(lambda: tet_edges(tets), device, repeat=2)
    row("tet_edges", res, t_edges, f"E={edges.shape[0]:,}")
    sdf = verts.norm(dim=-1) - 0.35
    t_mt, (mv, mf) = timed(lambda: marching_tets(verts, tets, sdf), device, repeat=3)
    row("marching_tets sphere", res, t_mt, f"{mv.shape[0]:,} verts, {mf.shape[0]:,} faces")
    if with_field:
        from a3d_mesh.fields import HashGridConfig

        t_init, field = timed(lambda: DMTetField(2, res, HashGridConfig()).to(device), device)
        row("DMTetField() + .to(device)", res, t_init, "default hash grid (2^19 table)")
        t_e, _ = timed(lambda: field.edges, device)
        row("DMTetField.edges (lazy)", res, t_e, "first access: tet_edges on the device")
        u = torch.tensor([0.5, 0.5], device=device)
        with torch.no_grad():
            t_f, (fv, ff) = timed(lambda: field.extract(u), device, repeat=2)
        row("DMTetField.extract", res, t_f, f"no grad, untrained field, {ff.shape[0]:,} faces")


def bench_mesh_sdf(device: torch.device) -> None:
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    verts = torch.tensor(mesh.vertices, dtype=torch.float32, device=device)
    faces = torch.tensor(mesh.faces, dtype=torch.long, device=device)
    points = torch.rand(2048, 3, device=device) * 2 - 1
    t, _ = timed(lambda: mesh_sdf(verts, faces, points), device, repeat=2)
    pairs = points.shape[0] * faces.shape[0]
    row("mesh_sdf", 0, t, f"{pairs / t / 1e6:.1f} M point-face pairs/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--field", action="store_true", help="also time DMTetField.extract")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"| {'op':<26} | {'res':>4} | {'time (ms)':>10} | {'notes':<40} |")
    print(f"|{'-' * 28}|{'-' * 6}|{'-' * 12}|{'-' * 42}|")
    with tempfile.TemporaryDirectory() as tmp:
        for res in args.resolutions:
            bench_resolution(res, device, Path(tmp), args.field)
    bench_mesh_sdf(device)


if __name__ == "__main__":
    main()
