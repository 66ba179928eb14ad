"""The tiny random-weight pipeline: deterministic build, diffusers layout, lossless reload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from a3d_mesh.guidance import build_tiny_pipeline, load_components
from a3d_mesh.guidance.tiny import (
    BOS_TOKEN,
    EOS_TOKEN,
    ensure_tiny_pipeline,
    tiny_modules,
    tiny_vocab_and_merges,
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "pipe", seed=0)


def test_layout_and_size(tiny_dir: Path) -> None:
    index = json.loads((tiny_dir / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tiny_dir / sub).is_dir()
    size = sum(f.stat().st_size for f in tiny_dir.rglob("*") if f.is_file())
    assert size < 8 * 2**20


def test_same_seed_same_bytes_other_seed_differs(tiny_dir: Path, tmp_path: Path) -> None:
    weights = "unet/diffusion_pytorch_model.safetensors"
    again = build_tiny_pipeline(tmp_path / "again", seed=0)
    other = build_tiny_pipeline(tmp_path / "other", seed=1)
    assert (again / weights).read_bytes() == (tiny_dir / weights).read_bytes()
    assert (other / weights).read_bytes() != (tiny_dir / weights).read_bytes()


def test_reload_gives_same_outputs_as_built_modules(tiny_dir: Path) -> None:
    vocab, _ = tiny_vocab_and_merges()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        built = tiny_modules(len(vocab), eos_id=vocab[EOS_TOKEN], bos_id=vocab[BOS_TOKEN])
    for module in built.values():
        module.eval()
    comps = load_components(str(tiny_dir), "cpu")
    gen = torch.Generator().manual_seed(3)
    ids = comps.tokenizer(["a dog animal"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    latents = torch.randn(2, 4, 8, 8, generator=gen)
    context = torch.randn(2, 77, 32, generator=gen)
    image = torch.rand(1, 3, 64, 64, generator=gen) * 2 - 1
    t = torch.tensor([10, 700])
    with torch.no_grad():
        torch.testing.assert_close(comps.text_encoder(ids)[0], built["text_encoder"](ids)[0])
        torch.testing.assert_close(
            comps.unet(latents, t, encoder_hidden_states=context).sample,
            built["unet"](latents, t, encoder_hidden_states=context).sample,
        )
        mean = comps.vae.encode(image).latent_dist.mean
        torch.testing.assert_close(mean, built["vae"].encode(image).latent_dist.mean)
    # SD's factor-8 VAE with 4 latent channels.
    assert mean.shape == (1, 4, 8, 8)
    assert comps.scheduler.alphas_cumprod.shape == (1000,)


def test_tokenizer_uses_written_vocab_and_merges(tiny_dir: Path) -> None:
    comps = load_components(str(tiny_dir), "cpu")
    tok = comps.tokenizer
    vocab, _ = tiny_vocab_and_merges()
    ids = tok(["A  Dog"]).input_ids[0]
    # Lower-cased, whitespace-collapsed, whole-word merges applied, wrapped in BOS/EOS.
    assert ids == [vocab[BOS_TOKEN], vocab["a</w>"], vocab["dog</w>"], vocab[EOS_TOKEN]]
    # An unknown word falls back to byte symbols instead of an unknown token.
    zebra = tok(["zebra"]).input_ids[0][1:-1]
    assert zebra == [vocab["z"], vocab["e"], vocab["b"], vocab["r"], vocab["a</w>"]]
    assert tok.model_max_length == 77


def test_diffusers_pipeline_loads_the_folder(tiny_dir: Path) -> None:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_dir), safety_checker=None)
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert pipe.vae_scale_factor == 8


def test_tiny_model_is_built_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("A3D_CACHE", str(tmp_path))
    comps = load_components("tiny", "cpu")
    folder = tmp_path / "models" / "tiny-sd"
    assert (folder / "model_index.json").is_file()
    stamp = (folder / "model_index.json").stat().st_mtime_ns
    assert ensure_tiny_pipeline() == folder
    assert (folder / "model_index.json").stat().st_mtime_ns == stamp
    assert comps.model_id == "tiny" and comps.dtype == torch.float32
    assert not any(p.requires_grad for p in comps.unet.parameters())
