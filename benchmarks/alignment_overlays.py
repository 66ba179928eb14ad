"""Top views of the alignment benchmark's meshes, overlaid: does each set stand in one frame?

For every (set, seed) of a ``results.json`` written by ``benchmarks/alignment.py``: one row, two
panels, the joint run's meshes and the independent runs' meshes. Each panel looks straight down
(-Y) onto the ground plane, +X to the right and -Z up (where the templates' back rests are), and
draws every mesh of the set as surface samples in its own colour (red, blue, green in prompt
order), each mesh centred on its area centroid and scaled to unit RMS radius: the frame of the
``overlay`` score. A set in one frame shows one footprint; unrelated yaws show crossed ones.
The row label gives each mode's mean ``shared_yaw`` (sy) and ``overlay`` (ov) scores (0 aligned,
~1 random).

    .venv/bin/python benchmarks/alignment_overlays.py runs/bench-alignment6/results.json \\
        --out docs/alignment-overlays.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from a3d_mesh.metrics.alignment import normalised_samples  # noqa: E402
from a3d_mesh.meshio import load_mesh  # noqa: E402
from a3d_mesh.images import labelled_grid, save_png  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from alignment_report import MODES, by_unit, unit_summary  # noqa: E402

COLOURS = [(214, 39, 40), (31, 119, 180), (44, 160, 44)]


def top_view(meshes: list[tuple[torch.Tensor, torch.Tensor]], size: int = 200, n_points: int = 3000) -> torch.Tensor:
    """One panel [size, size, 3] in [0, 1]: the meshes' normalised surface samples seen from above
    (x right, -z up; 1 RMS radius = size / 5 pixels), a faint cross at the centroid."""
    img = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    c0, s = (size - 1) / 2, size / 5  # pixel centres: a half turn maps pixel i to size - 1 - i
    draw.line([(c0, 0), (c0, size)], fill=(225, 225, 225))
    draw.line([(0, c0), (size, c0)], fill=(225, 225, 225))
    for k, (v, f) in enumerate(meshes):
        p = normalised_samples(v, f, n_points, seed=k)
        for x, z in zip((c0 + s * p[:, 0]).tolist(), (c0 + s * p[:, 2]).tolist()):
            draw.point((round(x), round(z)), fill=COLOURS[k % len(COLOURS)])
    return torch.from_numpy(np.asarray(img).copy()).float() / 255


def label(name: str, seed: int, recs: dict[str, dict]) -> str:
    """``set sN | joint sy S ov O | indep sy S ov O``: each mode's mean shared-yaw and overlay scores."""
    parts = [f"{name} s{seed}"]
    for mode in MODES:
        u = unit_summary(recs[mode]) if mode in recs else {"shared_yaw": math.nan, "overlay": math.nan}
        parts.append(f"{mode[:5]} sy {u['shared_yaw']:.2f} ov {u['overlay']:.2f}")
    return " | ".join(parts)


def page(records: list[dict], size: int = 200) -> np.ndarray:
    """One labelled row per (set, seed): [H, W, 3] uint8 (numpy); a mode without meshes is blank."""
    rows, labels = [], []
    gap = torch.ones(size, 12, 3)
    for (name, seed), recs in by_unit(records).items():
        panels = []
        for mode in MODES:
            meshes = [load_mesh(Path(m["glb"])) for m in recs.get(mode, {}).get("meshes", []) if "glb" in m]
            panels += [top_view(meshes, size) if meshes else torch.ones(size, size, 3), gap]
        rows.append(torch.cat(panels[:-1], dim=1))
        labels.append(label(name, seed, recs))
    if not rows:
        raise ValueError("no (set, seed) with measured meshes in the results")
    return labelled_grid(rows, labels)


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="results.json of benchmarks/alignment.py")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--size", type=int, default=200, help="panel size in pixels")
    args = ap.parse_args(argv)
    records = json.loads(args.results.read_text(encoding="utf-8"))
    out = save_png(args.out, page(records, args.size))
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
