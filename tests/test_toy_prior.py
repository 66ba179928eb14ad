"""The shipped toy prior: it loads as ``guidance.model=toy`` through the ordinary loader, and its
samples follow the prompt (colour and class), which is what SDS with it relies on."""

from __future__ import annotations

import json

import pytest
import torch

from a3d_mesh.guidance import encode_prompts, load_components
from a3d_mesh.guidance.loader import bundled_toy_prior
from a3d_mesh.guidance.mvdream import is_multiview_unet
from a3d_mesh.toy import shapes
from a3d_mesh.toy.prior import TOY_RESOLUTION, sample
from a3d_mesh.toy.scores import contexts, denoising_errors


@pytest.fixture(scope="module")
def samples() -> dict[str, torch.Tensor]:
    comps = load_components("toy", "cpu")
    prompts = ["a red chair", "a blue chair", "a red table", "a red stool"]
    emb = encode_prompts(comps, prompts)
    torch.manual_seed(0)
    n = 8  # two objects of 4 views each
    cond = emb.cond.repeat_interleave(n, 0)
    uncond = emb.uncond.repeat_interleave(n, 0)
    imgs = sample(comps.unet, cond, uncond, torch.Generator().manual_seed(0), comps.scheduler, steps=20,
                  guidance_scale=3.0)
    return {p: imgs[i * n:(i + 1) * n] for i, p in enumerate(prompts)}


def test_bundled_prior_is_small_and_documented() -> None:
    folder = bundled_toy_prior()
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size < 25 * 2**20
    info = json.loads((folder / "a3d_toy.json").read_text())
    assert info["resolution"] == TOY_RESOLUTION and info["steps"] > 0 and info["final_loss_last200"] < 0.1
    comps = load_components("toy", "cpu")
    assert comps.vae is None and comps.unet.config.sample_size == TOY_RESOLUTION
    # The demo runs the multi-view (MVDream) guidance path end to end (issue 24).
    assert info["format"] == 2 and is_multiview_unet(comps.unet) and comps.prediction_type == "v_prediction"


# What SDS with the shipped prior relies on, checked on its DDIM samples at CFG 3: objects on a white
# ground, the colour word bound, the class word giving each family its proportions. The first priors
# failed all three (tinted grounds, unbound colour) and carried them as strict xfails (issues 9, 24).


def _foreground(img: torch.Tensor) -> torch.Tensor:
    """[N,R,R,3] -> [N,R,R] mask of pixels clearly off the white background."""
    return (img.min(-1).values < 0.75)


def test_samples_are_objects_on_white(samples: dict[str, torch.Tensor]) -> None:
    for prompt, img in samples.items():
        fg = _foreground(img).float().mean((1, 2))
        assert bool((fg > 0.02).all()) and bool((fg < 0.7).all()), prompt
        corners = torch.stack([img[:, 0, 0], img[:, 0, -1], img[:, -1, 0], img[:, -1, -1]], 1)
        assert float(corners.mean()) > 0.8, prompt


def test_samples_follow_the_colour_word(samples: dict[str, torch.Tensor]) -> None:
    def mean_fg(img: torch.Tensor) -> torch.Tensor:
        m = _foreground(img).unsqueeze(-1).float()
        return (img * m).sum((0, 1, 2)) / m.sum((0, 1, 2)).clamp_min(1)

    red, blue = mean_fg(samples["a red chair"]), mean_fg(samples["a blue chair"])
    assert float(red[0] - red[2]) > 0.2 and float(blue[2] - blue[0]) > 0.2


def test_samples_follow_the_class_word(samples: dict[str, torch.Tensor]) -> None:
    """Tables are wide and low, stools narrow and tall: the foreground's width / height ratio."""

    def aspect(img: torch.Tensor) -> float:
        ratios = []
        for m in _foreground(img):
            rows, cols = m.any(1).nonzero(), m.any(0).nonzero()
            if len(rows) and len(cols):
                ratios.append((cols.max() - cols.min() + 1).item() / (rows.max() - rows.min() + 1).item())
        return sorted(ratios)[len(ratios) // 2]

    assert aspect(samples["a red table"]) > 1.2 * aspect(samples["a red stool"])


# The v2 prior (multi-view, 600 seatless near misses in 4000 objects) gives a bench without its seat
# as much "a red bench" evidence as the whole bench (margin -0.00005 over six yaws, -0.00025 at the
# canonical pose; chair +0.0008, stool +0.0016, table +0.0009; benchmarks/RESULTS.md, toy prior v2
# shipped). Strict: the day a retrained prior passes, the mark must go (issue 24).
BENCH_SEAT_WEAK = pytest.mark.xfail(strict=True, reason="v2 prior: no class evidence for the bench's seat (issue 24)")


@pytest.mark.parametrize("family", [pytest.param(f, marks=BENCH_SEAT_WEAK) if f == "bench" else f
                                    for f in shapes.FAMILIES])
def test_the_class_word_rewards_the_seat(family: str) -> None:
    """SDS keeps what raises the implicit classifier ``err("") - err(prompt)``. The first two priors
    gave a family without its seat or top as much class evidence as the whole object, and SDS on
    "a blue bench" dropped the seat; the prior trained with seatless near misses must not."""
    comps = load_components("toy", "cpu")
    ctx = contexts(comps, [f"a red {family}"])
    obj = shapes.template(family)
    obj.colour = "red"
    evidence = []
    for shape in (obj, shapes.without_seat(obj)):
        err = denoising_errors(comps, ctx, shape, timesteps=[200, 400, 600], yaws=[60.0 * k for k in range(6)],
                               views=4)
        evidence.append(float(err[1] - err[0]))
    assert evidence[0] > evidence[1] + 2e-4, evidence
