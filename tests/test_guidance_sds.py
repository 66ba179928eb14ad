"""Prompt embeddings, t schedules and SDS: gradients, guidance math, NaN guard."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler

from a3d_mesh.config import merge

from a3d_mesh.guidance import (
    PromptEmbeddings,
    Ramp,
    SDComponents,
    SDSConfig,
    SDSGuidance,
    build_tiny_pipeline,
    encode_prompts,
    load_components,
)
from a3d_mesh.guidance.embeddings import embed_texts

PROMPTS = ["a dog animal", "a cat animal", "a horse skeleton"]
NEGATIVES = ["cat, horse", "dog, horse", "dog, cat"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "pipe", seed=0)


@pytest.fixture
def tiny_setup(tiny_dir: Path) -> tuple[SDComponents, PromptEmbeddings]:
    comps = load_components(str(tiny_dir), "cpu")
    return comps, encode_prompts(comps, PROMPTS, NEGATIVES)


def test_corner_mix_equals_each_prompt_embedding(tiny_dir: Path) -> None:
    comps = load_components(str(tiny_dir), "cpu")
    alone = [embed_texts(comps, [p])[0] for p in PROMPTS]
    alone_neg = [embed_texts(comps, [n])[0] for n in NEGATIVES]
    emb = encode_prompts(comps, PROMPTS, NEGATIVES)
    assert emb.cond.shape == emb.uncond.shape == (3, 77, 32)
    assert comps.text_encoder is None
    for k in range(3):
        tau, tau_neg = emb.mix(torch.eye(3)[k])
        torch.testing.assert_close(tau, alone[k], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(tau_neg, alone_neg[k], atol=1e-5, rtol=1e-5)
    # Interior codes are the convex combination; a [B, K] batch mixes per item.
    u = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    tau, _ = emb.mix(u)
    torch.testing.assert_close(tau[0], 0.2 * alone[0] + 0.3 * alone[1] + 0.5 * alone[2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tau[1], alone[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError):
        embed_texts(comps, ["again"])


def test_empty_negatives_are_the_unconditional_embedding(tiny_dir: Path) -> None:
    comps = load_components(str(tiny_dir), "cpu")
    empty = embed_texts(comps, [""])[0]
    emb = encode_prompts(comps, PROMPTS[:2], [])
    torch.testing.assert_close(emb.uncond[1], empty, atol=1e-5, rtol=1e-5)
    restored = PromptEmbeddings.from_state_dict(emb.state_dict())
    assert torch.equal(restored.cond, emb.cond) and restored.prompts == tuple(PROMPTS[:2])


def test_timestep_schedule_values() -> None:
    cfg = SDSConfig()  # reference: t_max 0.98 -> 0.5, t_min 0.98 -> 0.02 over progress [0, 0.8]
    sds = SDSGuidance.__new__(SDSGuidance)
    sds.cfg, sds.num_train_timesteps = cfg, 1000
    assert sds.timestep_range(0.0) == (980, 980)
    assert sds.timestep_range(0.4) == (500, 740)
    assert sds.timestep_range(0.8) == (20, 500)
    assert sds.timestep_range(1.0) == (20, 500)
    ramp = Ramp.from_data([1.0, 0.0, 0.5, 0.75])
    assert [ramp(p) for p in (0.0, 0.5, 0.625, 0.75, 2.0)] == [1.0, 1.0, 0.5, 0.0, 0.0]
    assert Ramp.from_data(0.3)(0.9) == 0.3
    crossed = merge(SDSConfig(), {"t_min": 0.9, "t_max": [0.5, 0.5]})
    sds.cfg = crossed
    assert sds.timestep_range(0.5) == (500, 500)
    with pytest.raises(ValueError):
        merge(SDSConfig(), {"t_maxx": 0.5})


def test_rgb_sds_gradient_reaches_image_parameter(tiny_setup: tuple[SDComponents, PromptEmbeddings]) -> None:
    comps, emb = tiny_setup
    cfg = SDSConfig(resolution=64, guidance_scale=7.5, vae_slicing=True, vae_checkpointing=True, channels_last=True)
    sds = SDSGuidance(comps, emb, cfg, seed=0)
    image = torch.nn.Parameter(torch.rand(2, 80, 80, 3, generator=torch.Generator().manual_seed(0)))
    out = sds(image, torch.tensor([0.25, 0.75, 0.0]), progress=0.5)
    out.loss.backward()
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert image.grad is not None and torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0
    assert sds.timestep_range(0.5) == (380, 680)
    assert out.t.shape == (2,) and out.t.dtype == torch.int64 and ((out.t >= 380) & (out.t <= 680)).all()
    assert not out.nonfinite and math.isfinite(out.grad_norm) and out.grad_norm > 0
    # loss = 0.5 * ||g||^2 / B, so it carries the gradient norm.
    assert out.loss.item() == pytest.approx(0.5 * out.grad_norm**2 / 2, rel=1e-4)
    # Same seed, same draws.
    again = SDSGuidance(comps, emb, cfg, seed=0)(image, torch.tensor([0.25, 0.75, 0.0]), progress=0.5)
    assert torch.equal(again.t, out.t) and again.loss.item() == pytest.approx(out.loss.item(), rel=1e-5)


def test_latent_sds_and_grad_clip(tiny_setup: tuple[SDComponents, PromptEmbeddings]) -> None:
    comps, emb = tiny_setup
    sds = SDSGuidance(comps, emb, SDSConfig(input="latent", grad_clip=0.01), seed=1)
    latents = torch.nn.Parameter(torch.randn(3, 4, 8, 8))
    out = sds(latents, torch.tensor([0.0, 1.0, 0.0]), progress=1.0)
    out.loss.backward()
    assert latents.grad is not None and latents.grad.abs().max() <= 0.01 / 3 + 1e-7
    assert latents.grad.abs().max() > 0


class FakeUNet(torch.nn.Module):
    """eps = 0.5 * z_t + mean of the text context per item; records its inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, torch.Tensor] = {}
        self.fill: float | None = None

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                return_dict: bool = True) -> tuple[torch.Tensor]:
        self.seen = {"sample": sample, "t": timestep, "ctx": encoder_hidden_states}
        out = 0.5 * sample + encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        if self.fill is not None:
            out = torch.full_like(out, self.fill)
        return (out,)


def fake_setup(prediction_type: str = "epsilon") -> tuple[SDComponents, PromptEmbeddings, FakeUNet]:
    unet = FakeUNet()
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              prediction_type=prediction_type)
    comps = SDComponents(tokenizer=None, text_encoder=None, unet=unet, vae=None, scheduler=scheduler,
                         model_id="fake", dtype=torch.float32, device=torch.device("cpu"))
    cond = torch.stack([torch.full((4, 6), 1.0), torch.full((4, 6), 3.0)])
    uncond = torch.stack([torch.full((4, 6), -1.0), torch.full((4, 6), 0.0)])
    return comps, PromptEmbeddings(cond, uncond, ("a", "b"), ("", "")), unet


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_classifier_free_guidance_matches_hand_computation(prediction_type: str) -> None:
    comps, emb, unet = fake_setup(prediction_type)
    s = 7.0
    cfg = SDSConfig(input="latent", guidance_scale=s, t_min=0.3, t_max=0.3, weighting="sds")
    sds = SDSGuidance(comps, emb, cfg, seed=0)
    z = torch.nn.Parameter(torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1)))
    u = torch.tensor([0.25, 0.75])
    out = sds(z, u, progress=0.0)
    out.loss.backward()

    assert out.t.tolist() == [300, 300]
    a = comps.scheduler.alphas_cumprod[300].item()
    z_t = unet.seen["sample"][:2]
    noise = (z_t - math.sqrt(a) * z.detach()) / math.sqrt(1 - a)
    # tau(u) mean = 0.25*1 + 0.75*3 = 2.5; tau-(u) mean = 0.25*(-1) + 0.75*0 = -0.25.
    out_c, out_u = 0.5 * z_t + 2.5, 0.5 * z_t - 0.25
    if prediction_type == "v_prediction":
        out_c = math.sqrt(a) * out_c + math.sqrt(1 - a) * z_t
        out_u = math.sqrt(a) * out_u + math.sqrt(1 - a) * z_t
    expected = (1 - a) * (out_u + s * (out_c - out_u) - noise)
    torch.testing.assert_close(z.grad, expected / 2, atol=1e-4, rtol=1e-4)
    assert out.w.tolist() == pytest.approx([1 - a, 1 - a])
    assert unet.seen["t"].tolist() == [300] * 4


def test_nan_guard_zeroes_gradient_and_reports() -> None:
    comps, emb, unet = fake_setup()
    sds = SDSGuidance(comps, emb, SDSConfig(input="latent", weighting="uniform"), seed=0)
    unet.fill = float("nan")
    z = torch.nn.Parameter(torch.randn(2, 4, 3, 3))
    out = sds(z, torch.tensor([1.0, 0.0]), progress=0.5)
    out.loss.backward()
    assert out.nonfinite and out.grad_norm == 0.0 and out.loss.item() == 0.0
    assert torch.equal(z.grad, torch.zeros_like(z))
    # A NaN in the input itself (a broken render) is guarded the same way.
    unet.fill = None
    bad = torch.nn.Parameter(torch.randn(2, 4, 3, 3))
    with torch.no_grad():
        bad[0, 0, 0, 0] = float("nan")
    out = sds(bad, torch.tensor([1.0, 0.0]), progress=0.5)
    out.loss.backward()
    assert out.nonfinite and torch.isfinite(out.loss) and torch.isfinite(bad.grad).all()
