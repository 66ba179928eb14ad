"""Child-process entry point for xatlas: ``python xatlas_child.py IN.npz OUT.npz``.

Run as a plain script (not ``-m``) so the child imports only numpy and xatlas, not torch or the
rest of the package: it starts fast, and if xatlas crashes (it can segfault on some clean
high-resolution meshes) only this process dies.

IN.npz holds ``verts [V,3] float32``, ``faces [F,3] uint32``, ``resolution`` and ``padding``
(texels), ``max_chart_area`` (world units squared, 0 = unlimited) and, optionally,
``brute_force`` (bool, default false). OUT.npz receives
``vmapping [V'] uint32`` (index of the input vertex each output vertex copies),
``faces [F,3] uint32`` and ``uv [V',2] float32`` in [0, 1].
"""

from __future__ import annotations

import sys

import numpy as np


def parametrize(
    verts: np.ndarray, faces: np.ndarray, resolution: int, padding: int, max_chart_area: float,
    brute_force: bool = False,
) -> tuple[np.ndarray, ...]:
    """Run xatlas chart generation and packing; return ``(vmapping, faces, uv)``."""
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(verts, faces)
    charts = xatlas.ChartOptions()
    # Bounding chart area keeps charting fast: unbounded charts on smooth, clean meshes grow huge
    # and their growth/parametrisation dominates xatlas' run time (5x slower at 20k faces).
    charts.max_chart_area = float(max_chart_area)
    pack = xatlas.PackOptions()
    pack.resolution = int(resolution)
    pack.padding = int(padding)
    # No extra bilinear ring around each chart: the padding already is the gutter (scaled to the
    # resolution by the parent) and the bake dilates colour into it; the ring only cost texels.
    pack.bilinear = False
    pack.bruteForce = bool(brute_force)
    atlas.generate(chart_options=charts, pack_options=pack)
    if atlas.atlas_count != 1:
        # Several atlases would share the [0, 1] UV square and overlap: let the parent fall back.
        raise RuntimeError(f"xatlas produced {atlas.atlas_count} atlases, expected 1")
    vmapping, out_faces, uv = atlas[0]
    return vmapping, out_faces, uv


def main(argv: list[str]) -> int:
    """Read the job, unwrap, write the result atomically enough for the parent (exit code 0)."""
    src, dst = argv[1], argv[2]
    job = np.load(src)
    vmapping, faces, uv = parametrize(
        np.ascontiguousarray(job["verts"], np.float32),
        np.ascontiguousarray(job["faces"], np.uint32),
        int(job["resolution"]),
        int(job["padding"]),
        float(job["max_chart_area"]),
        bool(job["brute_force"]) if "brute_force" in job.files else False,
    )
    with open(dst, "wb") as fh:
        np.savez(fh, vmapping=vmapping, faces=faces, uv=uv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
