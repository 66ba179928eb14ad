"""Diagnostic (issue 9): what the toy prior prefers, shape by shape.

For each 3D shape (the families' templates, plus two near misses from ``shapes.filled``: the
"column chair", whose seat and back are one solid block over the seat's footprint, which is what
SDS with the first toy prior made of a chair, and the "block chair", filled from the ground; and
each family without its seat or top, ``shapes.without_seat``, which is what SDS makes of a bench; and
the chair turned 180 deg, its back to the front cameras), render it in the canonical pose with
the training renderer, in 4 groups of 4 spread views with their cameras, and report the prior's
mean denoising error ``E |eps(x_t, t, c, camera) - eps|^2`` over fixed noise at 8 timesteps, per prompt. Lower is more
likely under that prompt (it is the diffusion ELBO up to weights). The last column,
``uncond - cond`` for the shape's own family's prompt, is the implicit classifier ``log p(c | x)``
up to weights: the part of the SDS gradient that classifier-free guidance multiplies by its scale.

    .venv/bin/python benchmarks/toy_prior_scores.py [--model runs/toy-prior/prior]

A prior trained with near misses (``--near-misses``) has seen such shapes under the empty
caption, so for it these two rows are training-like, not held out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from a3d_mesh.guidance import load_components  # noqa: E402
from a3d_mesh.toy.scores import contexts, denoising_errors  # noqa: E402
from a3d_mesh.toy.shapes import filled, template, without_seat  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="toy", help="the prior: toy (bundled) or a diffusers folder")
    ap.add_argument("--colour", default="red")
    ap.add_argument("--timesteps", type=int, nargs="+", default=[100, 200, 300, 400, 500, 600, 700, 800])
    args = ap.parse_args()
    comps = load_components(args.model, "cpu")
    shapes = {f: template(f) for f in ("chair", "stool", "table", "bench")}
    chair = shapes["chair"]
    shapes["column-chair"] = filled(chair, chair.params["seat_h"])  # what SDS made of "a red chair"
    shapes["block-chair"] = filled(chair, 0.0)
    for f in ("chair", "stool", "table", "bench"):
        shapes[f"{f} no seat"] = without_seat(shapes[f])
    yaws = {name: 0.0 for name in shapes}
    shapes["chair turned"], yaws["chair turned"] = template("chair"), 180.0  # back at +Z: facing away from the front
    prompts = [f"a {args.colour} {f}" for f in ("chair", "table", "bench", "stool")]
    ctx = contexts(comps, prompts)
    print(f"mean denoising error (lower = preferred), {len(args.timesteps)} timesteps, 16 views")
    print(f"{'shape':14}" + "".join(f"{p:>15}" for p in prompts) + f"{'(no prompt)':>15}{'own: uncond-cond':>20}")
    for name, obj in shapes.items():
        obj.colour = args.colour
        err = denoising_errors(comps, ctx, obj, args.timesteps, yaws=(yaws[name],), views=16)
        own = prompts.index(f"a {args.colour} {obj.family}")
        print(f"{name:14}" + "".join(f"{float(e):15.4f}" for e in err) + f"{float(err[-1] - err[own]):20.4f}")


if __name__ == "__main__":
    main()
