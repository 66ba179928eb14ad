"""benchmarks/toy_prior_mixtures.py: the prior sampled at the method's mixed text embeddings."""

from __future__ import annotations

import pytest

import importlib.util
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from a3d_mesh.guidance import load_components
from a3d_mesh.toy.prior import sample
from a3d_mesh.toy.scores import contexts

pytestmark = pytest.mark.slow  # the toy prior sampled at mixed embeddings: not in the quick loop (-m 'not slow')

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_mixtures", ROOT / "benchmarks" / "toy_prior_mixtures.py")
mix = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mix)


def test_rows_run_from_prompt_i_to_prompt_j_from_one_noise() -> None:
    rows = mix.mixture_rows("toy", "a red chair", "a blue bench", samples=2, seed=3, steps=3, guidance_scale=3.0)
    assert len(rows) == 5 and all(r.shape == (32, 2 * 4 * 32, 3) for r in rows)  # 2 objects x 4 views
    # The ends are the plain prompts' samples from the same starting noise (the mixture is exact there).
    comps = load_components("toy", "cpu")
    ctx = contexts(comps, ["a red chair", "a blue bench"])
    for r, k in ((rows[0], 0), (rows[-1], 1)):
        plain = sample(comps.unet, ctx[k:k + 1].expand(8, -1, -1), ctx[2:3].expand(8, -1, -1),
                       torch.Generator().manual_seed(3), comps.scheduler, steps=3, guidance_scale=3.0)
        assert torch.allclose(r, torch.cat(list(plain), 1), atol=1e-5)
    assert (rows[0] - rows[-1]).abs().mean() > 0.01  # the two prompts draw different images


def test_cli_writes_a_labelled_zoomed_page(tmp_path: Path) -> None:
    out = mix.main(["a red chair", "a green table", "--out", str(tmp_path / "mix.png"), "--samples", "2",
                    "--steps", "2", "--zoom", "2"])
    img = np.asarray(Image.open(out))
    assert img.shape[1] == 2 * 4 * 32 * 2 and img.shape[0] >= 5 * 64  # five zoomed rows plus their labels
