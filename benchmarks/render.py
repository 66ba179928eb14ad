"""Benchmark: forward + backward of rasterize + interpolate + antialias.

For 10k and 100k triangle meshes at 256 and 512 px, prints the median time of the CPU path
(and of its visibility pass alone), of the CPU path with the pure-torch pixel math
(``A3D_RENDER_KERNELS=torch``, the reference the C kernels replace), the raw rasterisation time
of the independent reference (OpenGL/llvmpipe visibility through moderngl) on the same mesh and
the ratio between CPU f+b and that; and the cuda backend (nvdiffrast) when it is available. Run:

    OMP_NUM_THREADS=2 python benchmarks/render.py
"""

from __future__ import annotations

import math
import os
import statistics
import time
from typing import Callable

import torch

from a3d_mesh import render
from a3d_mesh.render import _raster_gl


def _perspective(fovy_deg: float = 40.0, near: float = 0.1, far: float = 10.0) -> torch.Tensor:
    f = 1.0 / math.tan(math.radians(fovy_deg) / 2)
    return torch.tensor([[f, 0, 0, 0], [0, f, 0, 0],
                         [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
                         [0, 0, -1, 0]])


def _mesh(n_tri: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A bumpy UV sphere with about ``n_tri`` triangles, in clip space: ``pos [1, V, 4]``, ``tri``."""
    import trimesh

    side = int(round(math.sqrt(n_tri / 3.9)))  # uv_sphere gives about 3.9 side^2 faces
    m = trimesh.creation.uv_sphere(radius=1.0, count=[side, side])
    v = torch.tensor(m.vertices, dtype=torch.float32)
    v = v * (1 + 0.05 * torch.sin(7 * v[:, :1]) * torch.cos(5 * v[:, 1:2]))
    v = v + torch.tensor([0.0, 0.0, -3.5])
    pos = torch.cat([v, torch.ones(v.shape[0], 1)], 1) @ _perspective().T
    return pos[None].contiguous(), torch.tensor(m.faces, dtype=torch.int64)


def _median_time(fn: Callable[[], object], reps: int, sync: bool = False) -> float:
    fn()  # warm-up (library build, contexts, caches)
    times = []
    for _ in range(reps):
        if sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _fwd_bwd(pos: torch.Tensor, tri: torch.Tensor, col: torch.Tensor, topo: object, res: int,
             backend: str) -> Callable[[], None]:
    def run() -> None:
        p = pos.detach().requires_grad_(True)
        rast, _ = render.rasterize(p, tri, (res, res), backend=backend)
        img, _ = render.interpolate(col, rast, tri, backend=backend)
        out = render.antialias(img, rast, p, tri, topology_hash=topo, backend=backend)
        out.sum().backward()
    return run


def _torch_math(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` run with the C pixel kernels switched off (torch reference math)."""
    def run() -> None:
        old = os.environ.get("A3D_RENDER_KERNELS")
        os.environ["A3D_RENDER_KERNELS"] = "torch"
        try:
            fn()
        finally:
            if old is None:
                del os.environ["A3D_RENDER_KERNELS"]
            else:
                os.environ["A3D_RENDER_KERNELS"] = old
    return run


def main() -> None:
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"visibility engine: {render.visibility_engine()}")
    print(f"{'tris':>7} {'res':>4} {'cpu f+b (s)':>11} {'cpu vis (s)':>11} "
          f"{'torch-math f+b (s)':>18} {'gl raster (s)':>13} {'ratio':>6} {'cuda f+b (ms)':>13}")
    for n_tri in (10_000, 100_000):
        pos, tri = _mesh(n_tri)
        col = torch.rand(1, pos.shape[1], 3)
        topo = render.antialias_construct_topology_hash(tri)
        for res in (256, 512):
            cpu = _median_time(_fwd_bwd(pos, tri, col, topo, res, "cpu"), 5)
            ref = _median_time(_torch_math(_fwd_bwd(pos, tri, col, topo, res, "cpu")), 3)
            vis = _median_time(lambda: render.visibility(pos, tri, (res, res)), 5)
            gl = (_median_time(lambda: render.visibility(pos, tri, (res, res), engine="gl"), 5)
                  if _raster_gl.available() else float("nan"))
            cuda = float("nan")
            if "cuda" in render.available_backends():
                pc, tc, cc = pos.cuda(), tri.cuda(), col.cuda()
                cuda = 1e3 * _median_time(_fwd_bwd(pc, tc, cc, None, res, "cuda"), 20, sync=True)
            print(f"{tri.shape[0]:>7} {res:>4} {cpu:>11.3f} {vis:>11.3f} {ref:>18.3f} {gl:>13.3f} "
                  f"{cpu / gl:>6.2f} {cuda:>13.2f}")


if __name__ == "__main__":
    main()
