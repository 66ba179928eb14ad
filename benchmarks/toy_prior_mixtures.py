"""Diagnostic (issue 9): what the toy prior draws at the method's interior codes.

A3D trains the inside of each transition with SDS under the mixed text embedding
``tau(a) = a tau_i + (1 - a) tau_j`` (the unconditional one is the same ``""`` for both here). If
the prior drew noise or one fixed class at mixed embeddings, the transitions would have nothing
plausible to become and could not hold a set together. This draws DDIM samples at
``a = 1, 0.75, 0.5, 0.25, 0`` (rows, top first) with the same starting noise in each column,
so a column shows how one sample moves from prompt i to prompt j. Each sample is one object seen
in the prior's 4 views (front, right, back, left at 15 deg elevation: 4 columns).

    .venv/bin/python benchmarks/toy_prior_mixtures.py "a red chair" "a blue bench" --out docs/toy-prior-mix-chair-bench.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from a3d_mesh.guidance import encode_prompts, load_components  # noqa: E402
from a3d_mesh.simplex import edge  # noqa: E402
from a3d_mesh.toy.data import TOY_FRAMES  # noqa: E402
from a3d_mesh.toy.prior import sample  # noqa: E402
from a3d_mesh.images import labelled_grid, row, save_png  # noqa: E402

WEIGHTS = (1.0, 0.75, 0.5, 0.25, 0.0)


def mixture_rows(model: str, prompt_i: str, prompt_j: str, samples: int, seed: int, steps: int,
                 guidance_scale: float) -> list[torch.Tensor]:
    """One strip ``[R, samples * 4 * R, 3]`` per weight in ``WEIGHTS`` (4 views per sample), each from
    the same noise; the embeddings of each code are mixed as in training (``PromptEmbeddings.mix``
    of the edge code)."""
    comps = load_components(model, "cpu")
    emb = encode_prompts(comps, [prompt_i, prompt_j])
    out = []
    for a in WEIGHTS:
        cond, uncond = (e.expand(samples * TOY_FRAMES, -1, -1) for e in emb.mix(edge(0, 1, a, 2)))
        out.append(row(sample(comps.unet, cond, uncond, torch.Generator().manual_seed(seed), comps.scheduler,
                              steps=steps, guidance_scale=guidance_scale)))
    return out


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("prompt_i")
    ap.add_argument("prompt_j")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--model", default="toy", help="the prior: toy (bundled) or a diffusers folder")
    ap.add_argument("--samples", type=int, default=3, help="objects (4 views each) in a row")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--steps", type=int, default=30, help="DDIM steps")
    ap.add_argument("--guidance-scale", type=float, default=3.0)
    ap.add_argument("--zoom", type=int, default=3, help="pixel repeat, for reading 32 px samples")
    a = ap.parse_args(argv)
    rows = mixture_rows(a.model, a.prompt_i, a.prompt_j, a.samples, a.seed, a.steps, a.guidance_scale)
    rows = [r.repeat_interleave(a.zoom, 0).repeat_interleave(a.zoom, 1) for r in rows]
    labels = [f"a = {w:.2f}" + (f" ({a.prompt_i})" if w == 1 else f" ({a.prompt_j})" if w == 0 else "")
              for w in WEIGHTS]
    path = save_png(a.out, labelled_grid(rows, labels))
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
