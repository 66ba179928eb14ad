"""View-dependent prompting: the view word per camera, mixing per view, one encoding per text, SDS
conditioning per item, and the warning for prompts the tokenizer cuts."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler

from a3d_mesh.cameras import make_cameras
from a3d_mesh.config import ConfigError, load_config
from a3d_mesh.guidance import (PromptEmbeddings, SDComponents, SDSConfig, SDSGuidance, ViewPromptConfig,
                               encode_prompts, load_components, truncation_warnings)
from a3d_mesh.guidance.embeddings import embed_texts, find_truncation, tokenize
from a3d_mesh.guidance.views import VIEWS, prompt_texts, view_index
from a3d_mesh.prompts import PromptSet
from a3d_mesh.simplex import CodeSample
from a3d_mesh.train.guide import PriorGuide, StepRender
from a3d_mesh.progress import Progress
from a3d_mesh.train.pipeline import build_guides

PROMPTS = ["a dog animal", "a cat animal"]
NEGATIVES = ["cat", "dog"]


def words_at(elevation: list[float], azimuth: list[float], cfg: ViewPromptConfig | None = None) -> list[str]:
    cams = make_cameras(torch.tensor(elevation), torch.tensor(azimuth), torch.full((len(azimuth),), 3.0),
                        torch.full((len(azimuth),), 40.0))
    idx = view_index(cfg or ViewPromptConfig(), cams.elevation, cams.azimuth)
    assert idx.dtype == torch.int64 and idx.shape == (len(azimuth),)
    return [VIEWS[i] for i in idx.tolist()]


def test_view_word_for_each_camera() -> None:
    # Azimuth 0 is the camera on +Z: that is the front; both sides are "side"; +-180 is the back.
    assert words_at([0.0] * 5, [0.0, 90.0, -90.0, 180.0, -180.0]) == ["front", "side", "side", "back", "back"]
    front = make_cameras(torch.tensor([10.0]), torch.tensor([0.0]), torch.tensor([3.0]), torch.tensor([40.0]))
    assert front.position[0, 2] > 2.9  # the front camera sits on +Z: an object's front faces +Z
    # threestudio's bounds are strict: 45 and 135 are sides, a hair inside is front / back.
    assert words_at([0.0] * 6, [44.9, 45.0, -44.9, -45.0, 135.0, -135.1]) == [
        "front", "side", "front", "side", "side", "back"]
    # Azimuths wrap: 360 is the front, 225 (= -135) a side, 539 (= 179) the back.
    assert words_at([0.0] * 3, [360.0, 225.0, 539.0]) == ["front", "side", "back"]
    # Overhead above 60 degrees of elevation, whatever the azimuth; exactly 60 is not overhead.
    assert words_at([60.0, 60.1, 75.0, 89.0], [0.0, 0.0, 180.0, 90.0]) == ["front", "overhead", "overhead", "overhead"]
    # The thresholds are settings; off means one view for every camera.
    wide = ViewPromptConfig(front_threshold=60.0, back_threshold=30.0, overhead_threshold=30.0)
    assert words_at([0.0, 0.0, 0.0, 40.0], [50.0, 140.0, 155.0, 0.0], wide) == ["front", "side", "back", "overhead"]
    idx = view_index(ViewPromptConfig(enabled=False), torch.tensor([0.0, 80.0]), torch.tensor([180.0, 0.0]))
    assert idx.tolist() == [0, 0]


def test_prompt_texts_and_settings() -> None:
    texts = prompt_texts(ViewPromptConfig(), "a dog")
    assert dict(zip(VIEWS, texts)) == {"front": "a dog, front view", "side": "a dog, side view",
                                       "back": "a dog, back view", "overhead": "a dog, overhead view"}
    custom = ViewPromptConfig(template="{view} view of {prompt}", back="rear")
    assert prompt_texts(custom, "a dog")[VIEWS.index("back")] == "rear view of a dog"
    assert prompt_texts(ViewPromptConfig(enabled=False), "a dog") == ["a dog"]
    assert load_config("default").guidance.view_prompts.enabled
    assert not load_config("toy").guidance.view_prompts.enabled  # its captions have no view words
    cfg = load_config("tiny", ["guidance.view_prompts.front_threshold=30", "guidance.view_prompts.side=lateral"])
    assert cfg.guidance.view_prompts.front_threshold == 30.0 and cfg.guidance.view_prompts.side == "lateral"
    for bad in ("guidance.view_prompts.template='{view} view'", "guidance.view_prompts.template='{prompt} {angle}'",
                "guidance.view_prompts.front_threshold=200"):
        with pytest.raises(ConfigError) as e:
            load_config("tiny", [bad])
        assert "view_prompts" in str(e.value) and "\n" not in str(e.value)


@pytest.fixture(scope="module")
def tiny_view_embeddings() -> tuple[PromptEmbeddings, dict[str, torch.Tensor]]:
    """Embeddings of PROMPTS / NEGATIVES with view prompting, and each text embedded on its own."""
    ref = load_components("tiny", "cpu")
    cfg = ViewPromptConfig()
    texts = [t for p in PROMPTS for t in prompt_texts(cfg, p)] + NEGATIVES
    alone = {t: embed_texts(ref, [t])[0] for t in texts}
    return encode_prompts(load_components("tiny", "cpu"), PROMPTS, NEGATIVES, cfg), alone


def test_mixing_per_view_is_the_sum_over_prompts(tiny_view_embeddings) -> None:
    emb, alone = tiny_view_embeddings
    assert emb.cond_views.shape == emb.uncond_views.shape == (4, 2, 77, 32) and emb.num_views == 4
    u = torch.tensor([[0.3, 0.7], [1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    views = torch.tensor([2, 0, 3, 1])
    tau, tau_neg = emb.mix(u, views)
    assert tau.shape == tau_neg.shape == (4, 77, 32)
    for b in range(4):
        word = VIEWS[int(views[b])]
        # tau(u, view) = sum_k u_k tau_k(view); the negatives are the same for every view.
        hand = sum(u[b, k] * alone[f"{PROMPTS[k]}, {word} view"] for k in range(2))
        hand_neg = sum(u[b, k] * alone[NEGATIVES[k]] for k in range(2))
        torch.testing.assert_close(tau[b], hand, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(tau_neg[b], hand_neg, atol=1e-5, rtol=1e-5)
    # One code for the batch is shared by every item, each in its own view.
    shared, _ = emb.mix(torch.tensor([0.3, 0.7]), views)
    torch.testing.assert_close(shared[0], tau[0])
    # Without views, view 0 (front) for all, as before: [L, D] for one code.
    front, _ = emb.mix(torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(front, alone["a cat animal, front view"], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        emb.mix(u, torch.tensor([0, 4, 1, 1]))  # no view 4
    with pytest.raises(ValueError):
        emb.cond  # noqa: B018 (the view-free table is ambiguous with 4 views)


def test_state_dict_round_trip_and_old_form(tiny_view_embeddings) -> None:
    emb, _ = tiny_view_embeddings
    back = PromptEmbeddings.from_state_dict(emb.state_dict())
    assert torch.equal(back.cond_views, emb.cond_views) and back.view_prompts == emb.view_prompts
    # The view-free [K, L, D] form of older checkpoints reads as one view.
    old = {"cond": emb.cond_views[0], "uncond": emb.uncond_views[0], "prompts": PROMPTS, "negatives": NEGATIVES}
    one = PromptEmbeddings.from_state_dict(old)
    assert one.num_views == 1 and torch.equal(one.cond, emb.cond_views[0]) and one.view_prompts is None


class CountingEncoder(torch.nn.Module):
    """Wraps a text encoder; records every batch of token ids it is called with."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.calls.append(ids.clone())
        return self.inner(ids)


@pytest.mark.parametrize("views_on", [True, False])
def test_each_distinct_text_is_encoded_once(views_on: bool) -> None:
    comps = load_components("tiny", "cpu")
    counter = CountingEncoder(comps.text_encoder)
    comps.text_encoder = counter
    cfg = ViewPromptConfig(enabled=views_on)
    # A repeated prompt and a shared empty negative: distinct texts are 2 prompts x V views + 2 negatives.
    emb = encode_prompts(comps, ["a dog", "a cat", "a dog"], ["", "x", ""], cfg)
    v = 4 if views_on else 1
    assert len(counter.calls) == 1
    rows = [tuple(r) for r in counter.calls[0].tolist()]
    assert len(rows) == len(set(rows)) == 2 * v + 2
    distinct = [t for p in ("a dog", "a cat") for t in prompt_texts(cfg, p)] + ["", "x"]
    assert set(rows) == {tuple(r) for r in tokenize(comps.tokenizer, distinct).tolist()}
    assert emb.cond_views.shape[:2] == (v, 3) and torch.equal(emb.cond_views[:, 0], emb.cond_views[:, 2])
    assert comps.text_encoder is None  # freed after the one pass


class RecordingUNet(torch.nn.Module):
    """eps = 0 (an SDS gradient of -w * noise); records the text context it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.ctx: torch.Tensor | None = None

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                return_dict: bool = True) -> tuple[torch.Tensor]:
        self.ctx = encoder_hidden_states
        return (torch.zeros_like(sample),)


def test_sds_conditions_each_item_on_its_view() -> None:
    unet = RecordingUNet()
    comps = SDComponents(tokenizer=None, text_encoder=None, unet=unet, vae=None, scheduler=DDPMScheduler(),
                         model_id="fake", dtype=torch.float32, device=torch.device("cpu"))
    # cond[v, k] = 10 v + k + 1 and uncond[v, k] = -(v + 1), constant over [L, D] = [3, 5].
    v_k = torch.arange(4).view(4, 1).float() * 10 + torch.arange(2).view(1, 2) + 1
    cond = v_k.view(4, 2, 1, 1).expand(4, 2, 3, 5).clone()
    uncond = -(torch.arange(4).float() + 1).view(4, 1, 1, 1).expand(4, 2, 3, 5).clone()
    emb = PromptEmbeddings(cond, uncond, ("a", "b"), ("", ""), ViewPromptConfig())
    sds = SDSGuidance(comps, emb, SDSConfig(input="latent"), seed=0)
    u = torch.tensor([0.25, 0.75])
    # Cameras: back, front, overhead (PriorGuide reads the views off the step's cameras).
    cams = make_cameras(torch.tensor([0.0, 10.0, 80.0]), torch.tensor([170.0, -20.0, 90.0]),
                        torch.full((3,), 3.0), torch.full((3,), 40.0))
    z = torch.nn.Parameter(torch.randn(3, 4, 2, 2))
    render = StepRender(rgb=z, mask=torch.ones(3, 2, 2, 1), background=torch.zeros(3, 2, 2, 3),
                        code=CodeSample(0, 1, 0.25, u), cams=cams, light=None, progress=0.5)
    loss, logs = PriorGuide(sds)(render, torch.Generator().manual_seed(0))
    loss.backward()
    assert math.isfinite(logs["sds"]) and z.grad is not None
    ctx = unet.ctx
    assert ctx is not None and ctx.shape == (6, 3, 5)
    for b, view in enumerate(("back", "front", "overhead")):
        v = VIEWS.index(view)
        assert torch.allclose(ctx[b], torch.full((3, 5), 0.25 * (10 * v + 1) + 0.75 * (10 * v + 2)))
        assert torch.allclose(ctx[3 + b], torch.full((3, 5), -(v + 1.0)))
    # Without views every item gets view 0; with one view the guide passes none.
    sds(z, u, 0.5)
    assert torch.allclose(unet.ctx[:3], torch.full((3, 3, 5), 0.25 * 1 + 0.75 * 2))
    single = SDSGuidance(comps, PromptEmbeddings(cond[0], uncond[0], ("a", "b"), ("", "")), SDSConfig(input="latent"))
    assert single.camera_views(cams.elevation, cams.azimuth) is None


def test_find_truncation_matches_what_tokenize_keeps() -> None:
    tok = load_components("tiny", "cpu").tokenizer
    long = " ".join(["a dog animal"] * 30)  # 90 words, 92 tokens with start and end
    cut = find_truncation(tok, long)
    assert cut is not None and cut.limit == tok.model_max_length == 77 and cut.tokens == 92
    kept_ids = tokenize(tok, [long])[0]
    assert cut.kept == tok.decode(kept_ids, skip_special_tokens=True).strip()
    assert cut.kept.split() == long.split()[:75] and cut.dropped.split() == long.split()[75:]
    assert find_truncation(tok, "a dog animal") is None


def test_truncation_warning_names_the_asset_and_the_cut() -> None:
    tok = load_components("tiny", "cpu").tokenizer
    long = " ".join(["a dog animal"] * 30)
    fits = " ".join(["a dog animal"] * 25)  # 75 words: exactly full, but not with a view word
    lines = truncation_warnings(tok, ["dog", "cat", "fox"], [long, "a cat animal", fits], [], ViewPromptConfig())
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    assert "'dog'" in lines[0] and "77" in lines[0] and "cut after" in lines[0] and "overhead view" in lines[0]
    assert "'fox'" in lines[1] and "with its view word" in lines[1] and "dropping \", overhead view\"" in lines[1]
    # Without view words the 75-word prompt fits; a long negative is reported as the negative.
    off = ViewPromptConfig(enabled=False)
    assert truncation_warnings(tok, ["fox"], [fits], [], off) == []
    neg = truncation_warnings(tok, ["cat"], ["a cat animal"], [long], off)
    assert len(neg) == 1 and "negative prompt of 'cat'" in neg[0] and "view word" not in neg[0]


def test_build_guides_warns_once_per_cut_prompt(tmp_path: Path) -> None:
    cfg = load_config("tiny")
    long = " ".join(["a dog animal"] * 30)
    prompts = PromptSet(["dog", "cat"], [long, "a cat animal"], ["", ""])
    log = io.StringIO()
    guide_c, guide_r = build_guides(cfg, prompts, torch.device("cpu"), Progress(stream=log), tmp_path)
    warnings = [line for line in log.getvalue().splitlines() if "warning" in line]
    assert len(warnings) == 1 and "'dog'" in warnings[0]
    assert guide_c.sds.embeddings.num_views == 4  # view prompting is on by default
