"""Child-process entry point for xatlas: ``python xatlas_child.py IN.npz OUT.npz``.

Run as a plain script (not ``-m``) so the child imports only numpy and xatlas, not torch or the
rest of the package: it starts fast, and if xatlas crashes (it can segfault on some clean
high-resolution meshes) only this process dies.

IN.npz holds ``verts [V,3] float32``, ``faces [F,3] uint32``, ``resolution`` and ``padding``
(texels), ``charts`` ``[N,3]`` (the chart settings to try, see :func:`parametrize`; areas in world
units squared, 0 = unlimited) and, optionally, ``brute_force`` (bool, default false). OUT.npz receives
``vmapping [V'] uint32`` (index of the input vertex each output vertex copies),
``faces [F,3] uint32`` and ``uv [V',2] float32`` in [0, 1].
"""

from __future__ import annotations

import sys

import numpy as np


def parametrize(
    verts: np.ndarray, faces: np.ndarray, resolution: int, padding: int, charts: np.ndarray,
    brute_force: bool = False,
) -> tuple[np.ndarray, ...]:
    """Run xatlas chart generation and packing once per row of ``charts``; return the
    ``(vmapping, faces, uv)`` of the atlas that covers the most texels.

    ``charts``: ``[N,3]`` float64 rows ``(max_chart_area, roundness_weight,
    normal_deviation_weight)``; NaN keeps xatlas' default. Which chart shape packs best depends
    on the mesh (boxy analytic meshes like xatlas' defaults, bumpy learned ones compact charts),
    and xatlas measures its own utilisation, so each candidate is simply tried.
    """
    import xatlas

    best: tuple[float, tuple[np.ndarray, ...]] | None = None
    for max_area, roundness, deviation in np.asarray(charts, np.float64).reshape(-1, 3):
        atlas = xatlas.Atlas()
        atlas.add_mesh(verts, faces)
        opts = xatlas.ChartOptions()
        # Bounding chart area keeps charting fast: unbounded charts on smooth, clean meshes grow
        # huge and their growth/parametrisation dominates xatlas' run time (5x slower at 20k faces).
        opts.max_chart_area = float(max_area)
        if not np.isnan(roundness):
            opts.roundness_weight = float(roundness)
        if not np.isnan(deviation):
            opts.normal_deviation_weight = float(deviation)
        pack = xatlas.PackOptions()
        pack.resolution = int(resolution)
        pack.padding = int(padding)
        # No extra bilinear ring around each chart: the padding already is the gutter (scaled to
        # the resolution by the parent) and the bake dilates colour into it; the ring only cost texels.
        pack.bilinear = False
        pack.bruteForce = bool(brute_force)
        atlas.generate(chart_options=opts, pack_options=pack)
        if atlas.atlas_count != 1:
            continue  # several atlases would share the [0, 1] UV square and overlap
        used = float(atlas.utilization)
        if best is None or used > best[0]:
            best = (used, atlas[0])
    if best is None:  # let the parent fall back
        raise RuntimeError(f"xatlas produced more than one atlas for every chart setting ({len(charts)})")
    return best[1]


def main(argv: list[str]) -> int:
    """Read the job, unwrap, write the result atomically enough for the parent (exit code 0)."""
    src, dst = argv[1], argv[2]
    job = np.load(src)
    vmapping, faces, uv = parametrize(
        np.ascontiguousarray(job["verts"], np.float32),
        np.ascontiguousarray(job["faces"], np.uint32),
        int(job["resolution"]),
        int(job["padding"]),
        np.asarray(job["charts"], np.float64),
        bool(job["brute_force"]) if "brute_force" in job.files else False,
    )
    with open(dst, "wb") as fh:
        np.savez(fh, vmapping=vmapping, faces=faces, uv=uv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
