"""The multi-view UNet: built from a config, saved and reloaded, attention across views, camera MLP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0

from a3d_mesh.guidance import load_components
from a3d_mesh.guidance.mvdream import (MultiViewAttnProcessor, MultiViewUNet2DConditionModel, is_multiview_unet,
                                       set_multiview_attention, tiny_multiview_unet)
from a3d_mesh.guidance.mvdream.tiny import TINY_LDM_CONFIG


@pytest.fixture(scope="module")
def unet() -> MultiViewUNet2DConditionModel:
    return tiny_multiview_unet(seed=0).eval()


def _inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 4, 8, 8, generator=g), torch.full((batch,), 500),
            torch.randn(batch, 7, TINY_LDM_CONFIG["context_dim"], generator=g), torch.randn(batch, 16, generator=g))


def _run(unet: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=ctx, class_labels=cam).sample


def test_config_fields_and_save_load_round_trip(unet: MultiViewUNet2DConditionModel, tmp_path: Path) -> None:
    assert unet.config.num_frames == 4 and unet.num_frames == 4
    assert unet.config.class_embed_type == "projection"
    assert unet.config.projection_class_embeddings_input_dim == 16
    # The camera MLP is Linear(16, D) -> SiLU -> Linear(D, D), D the time embedding width.
    assert unet.class_embedding.linear_1.in_features == 16
    assert unet.class_embedding.linear_2.out_features == unet.time_embedding.linear_2.out_features
    unet.save_pretrained(tmp_path / "unet")
    saved = json.loads((tmp_path / "unet" / "config.json").read_text())
    assert saved["_class_name"] == "MultiViewUNet2DConditionModel" and saved["num_frames"] == 4
    again = MultiViewUNet2DConditionModel.from_pretrained(tmp_path / "unet").eval()
    assert is_multiview_unet(again)
    assert all(isinstance(p, MultiViewAttnProcessor) for n, p in again.attn_processors.items() if "attn1" in n)
    args = _inputs(4)
    torch.testing.assert_close(_run(again, *args), _run(unet, *args), rtol=0, atol=0)
    two = MultiViewUNet2DConditionModel.from_pretrained(tmp_path / "unet", num_frames=2)
    assert two.num_frames == 2
    half = MultiViewUNet2DConditionModel.from_pretrained(tmp_path / "unet", torch_dtype=torch.float16)
    assert next(half.parameters()).dtype == torch.float16


def test_self_attention_mixes_the_views_of_a_group_only(unet: MultiViewUNet2DConditionModel) -> None:
    x, t, ctx, cam = _inputs(8)
    base = _run(unet, x, t, ctx, cam)
    x2 = x.clone()
    x2[1] += 1.0  # view 2 of group 1
    changed = _run(unet, x2, t, ctx, cam)
    assert (changed[0] - base[0]).abs().max() > 1e-4  # view 1 of the same group sees it
    torch.testing.assert_close(changed[4:], base[4:], rtol=0, atol=1e-6)  # the other group does not


def test_one_view_per_group_is_plain_sd_attention(unet: MultiViewUNet2DConditionModel) -> None:
    plain = UNet2DConditionModel(**{k: v for k, v in unet.config.items() if not k.startswith("_") and k != "num_frames"})
    plain.load_state_dict(unet.state_dict())
    plain.set_attn_processor(AttnProcessor2_0())
    plain.eval()
    single = tiny_multiview_unet(seed=0, num_frames=1).eval()
    args = _inputs(3)
    torch.testing.assert_close(_run(single, *args), _run(plain, *args))
    # And with groups of 4, views that differ give outputs plain SD attention does not.
    args4 = _inputs(4)
    assert (_run(unet, *args4) - _run(plain, *args4)).abs().max() > 1e-4


def test_processor_is_attention_over_the_concatenated_tokens(unet: MultiViewUNet2DConditionModel) -> None:
    attn = unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1
    g = torch.Generator().manual_seed(1)
    h = torch.randn(4, 5, attn.to_q.in_features, generator=g)
    with torch.no_grad():
        out = MultiViewAttnProcessor(4)(attn, h)
        tokens = h.reshape(1, 20, -1)  # by hand: softmax(q k^T / sqrt(d)) v over all 20 tokens
        q, k, v = attn.to_q(tokens), attn.to_k(tokens), attn.to_v(tokens)
        heads = attn.heads
        split = lambda a: a.view(1, 20, heads, -1).transpose(1, 2)  # noqa: E731
        w = torch.softmax(split(q) @ split(k).transpose(-1, -2) / split(q).shape[-1] ** 0.5, dim=-1)
        ref = attn.to_out[0]((w @ split(v)).transpose(1, 2).reshape(1, 20, -1)).reshape(4, 5, -1)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="groups of 4"):
        MultiViewAttnProcessor(4)(attn, h[:3])


def test_camera_embedding_changes_the_output(unet: MultiViewUNet2DConditionModel) -> None:
    x, t, ctx, cam = _inputs(4)
    base = _run(unet, x, t, ctx, cam)
    torch.testing.assert_close(_run(unet, x, t, ctx, cam.clone()), base, rtol=0, atol=0)
    other = cam.clone()
    other[:, 3] += 0.5
    assert (_run(unet, x, t, ctx, other) - base).abs().max() > 1e-4


def test_set_multiview_attention_undoes_slicing(unet: MultiViewUNet2DConditionModel) -> None:
    net = tiny_multiview_unet(seed=0).eval()
    net.set_attention_slice("auto")
    set_multiview_attention(net, 4)
    args = _inputs(4)
    torch.testing.assert_close(_run(net, *args), _run(unet, *args), rtol=0, atol=0)


def test_tiny_multiview_pipeline_loads_through_the_real_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               unet: MultiViewUNet2DConditionModel) -> None:
    monkeypatch.setenv("A3D_CACHE", str(tmp_path))
    comps = load_components("tiny-mvdream", "cpu")
    folder = tmp_path / "models" / "tiny-mvdream"
    assert json.loads((folder / "unet" / "config.json").read_text())["_class_name"] == "MultiViewUNet2DConditionModel"
    assert is_multiview_unet(comps.unet) and comps.vae is not None and comps.native_resolution == 64
    assert not any(p.requires_grad for p in comps.unet.parameters())
    args = _inputs(4)
    torch.testing.assert_close(_run(comps.unet, *args), _run(unet, *args), rtol=0, atol=0)
