"""Child-process entry point for xatlas: ``python xatlas_child.py IN.npz OUT.npz``.

Run as a plain script (not ``-m``) so the child imports only numpy and xatlas, not torch or the
rest of the package: it starts fast, and if xatlas crashes (it can segfault on some clean
high-resolution meshes) only this process dies.

IN.npz holds ``verts [V,3] float32``, ``faces [F,3] uint32``, ``resolution`` and ``padding``
(texels), ``charts`` ``[N,3]`` (the chart settings to try, see :func:`parametrize`; areas in world
units squared, 0 = unlimited) and, optionally, ``brute_force`` (bool, default false). OUT.npz receives
``count`` (the number of candidate atlases) and, for each candidate ``i``, ``vmapping_i [V'] uint32``
(index of the input vertex each output vertex copies), ``faces_i [F,3] uint32`` and
``uv_i [V',2] float32`` in [0, 1]; the parent keeps the one whose texels the bake fills most.
"""

from __future__ import annotations

import sys

import numpy as np


def parametrize(
    verts: np.ndarray, faces: np.ndarray, resolution: int, padding: int, charts: np.ndarray,
    brute_force: bool = False,
) -> list[tuple[np.ndarray, ...]]:
    """Run xatlas chart generation and packing once per row of ``charts``; return the
    ``(vmapping, faces, uv)`` of every single-atlas result.

    ``charts``: ``[N,3]`` float64 rows ``(max_chart_area, roundness_weight,
    normal_deviation_weight)``; NaN keeps xatlas' default. Which chart shape packs best depends
    on the mesh (boxy analytic meshes like xatlas' defaults, bumpy learned ones compact charts),
    so each is tried. The choice is the parent's: xatlas' own utilisation figure is not the share
    of texels the bake fills and picked an atlas 4 points worse on a toy bench (56 % vs 60 %).
    """
    import xatlas

    candidates: list[tuple[np.ndarray, ...]] = []
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
        candidates.append(atlas[0])
    if not candidates:  # let the parent fall back
        raise RuntimeError(f"xatlas produced more than one atlas for every chart setting ({len(charts)})")
    return candidates


def main(argv: list[str]) -> int:
    """Read the job, unwrap, write the result atomically enough for the parent (exit code 0)."""
    src, dst = argv[1], argv[2]
    job = np.load(src)
    candidates = parametrize(
        np.ascontiguousarray(job["verts"], np.float32),
        np.ascontiguousarray(job["faces"], np.uint32),
        int(job["resolution"]),
        int(job["padding"]),
        np.asarray(job["charts"], np.float64),
        bool(job["brute_force"]) if "brute_force" in job.files else False,
    )
    arrays: dict[str, np.ndarray] = {"count": np.int64(len(candidates))}
    for i, (vmapping, faces, uv) in enumerate(candidates):
        arrays.update({f"vmapping_{i}": vmapping, f"faces_{i}": faces, f"uv_{i}": uv})
    with open(dst, "wb") as fh:
        np.savez(fh, **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
