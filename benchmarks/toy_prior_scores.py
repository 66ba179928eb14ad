"""Diagnostic (issue 9): what the toy prior prefers, shape by shape, all yaws at once.

For each 3D shape (the families' templates, plus two near misses from ``shapes.filled``: the
"column chair", whose seat and back are one solid block over the seat's footprint, which is what
SDS with the first toy prior made of a chair, and the "block chair", filled from the ground; and
each family without its seat or top, ``shapes.without_seat``, which is what SDS makes of a bench), render
it with the training renderer at 12 yaws x 4 random views and report the prior's mean denoising
error ``E |eps(x_t, t, c) - eps|^2`` over fixed noise at 8 timesteps, per prompt. Lower is more
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from a3d_mesh.guidance import encode_prompts, load_components  # noqa: E402
from a3d_mesh.toy.data import DataConfig, render_object  # noqa: E402
from a3d_mesh.toy.shapes import filled, template, without_seat  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="toy", help="the prior: toy (bundled) or a diffusers folder")
    ap.add_argument("--colour", default="red")
    ap.add_argument("--timesteps", type=int, nargs="+", default=[100, 200, 300, 400, 500, 600, 700, 800])
    args = ap.parse_args()
    comps = load_components(args.model, "cpu")
    unet, alphas = comps.unet.float().eval(), comps.scheduler.alphas_cumprod
    shapes = {f: template(f) for f in ("chair", "stool", "table", "bench")}
    chair = shapes["chair"]
    shapes["column-chair"] = filled(chair, chair.params["seat_h"])  # what SDS made of "a red chair"
    shapes["block-chair"] = filled(chair, 0.0)
    for f in ("chair", "stool", "table", "bench"):
        shapes[f"{f} no seat"] = without_seat(shapes[f])
    prompts = [f"a {args.colour} {f}" for f in ("chair", "table", "bench", "stool")] + [""]
    emb = encode_prompts(comps, prompts)
    cfg = DataConfig(views_per_object=4, p_albedo_only=0.0)
    print(f"mean denoising error (lower = preferred), {len(args.timesteps)} timesteps, 12 yaws x 4 views")
    print(f"{'shape':14}" + "".join(f"{p or '(no prompt)':>15}" for p in prompts) + f"{'own: uncond-cond':>20}")
    for name, obj in shapes.items():
        obj.colour = args.colour
        g = torch.Generator().manual_seed(1)
        x0 = torch.cat([render_object(obj, float(yaw), g, cfg) for yaw in range(0, 360, 30)]).permute(0, 3, 1, 2) * 2 - 1
        err = torch.zeros(len(prompts))
        for t in args.timesteps:
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(t))
            xt = alphas[t].sqrt() * x0 + (1 - alphas[t]).sqrt() * noise
            with torch.no_grad():
                for i, p in enumerate(prompts):
                    ctx = (emb.cond[i:i + 1] if p else emb.uncond[:1]).expand(x0.shape[0], -1, -1)
                    eps = unet(xt, torch.full((x0.shape[0],), t), encoder_hidden_states=ctx, return_dict=False)[0]
                    err[i] += float(((eps - noise) ** 2).mean()) / len(args.timesteps)
        own = prompts.index(f"a {args.colour} {obj.family}")
        print(f"{name:14}" + "".join(f"{float(e):15.4f}" for e in err) + f"{float(err[-1] - err[own]):20.4f}")


if __name__ == "__main__":
    main()
