"""MVDream weights in the original layout and in ports: key conversion and one-line refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from a3d_mesh.errors import A3DMeshError
from a3d_mesh.guidance import build_tiny_pipeline, load_components
from a3d_mesh.guidance.mvdream import (MVDreamKindError, MVDreamWeightsError, build_tiny_multiview_pipeline,
                                       ldm_key_map, load_ldm_weights, to_ldm_state_dict, tiny_multiview_unet)
from a3d_mesh.guidance.mvdream.tiny import TINY_LDM_CONFIG


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mv")
    mv = build_tiny_multiview_pipeline(root / "mv", seed=0)
    sd = build_tiny_pipeline(root / "sd", seed=0)
    ldm = to_ldm_state_dict(tiny_multiview_unet(seed=0))
    # An original checkpoint is the whole latent-diffusion model: VAE and text encoder too.
    ldm["first_stage_model.encoder.conv_in.weight"] = torch.zeros(8, 3, 3, 3)
    ldm["cond_stage_model.model.token_embedding.weight"] = torch.zeros(10, 32)
    torch.save(ldm, root / "mvdream.pt")
    save_file(ldm, str(root / "mvdream.safetensors"))
    return {"root": root, "mv": mv, "sd": sd, "pt": root / "mvdream.pt", "st": root / "mvdream.safetensors"}


def _out(unet: torch.nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x, ctx, cam = torch.randn(4, 4, 8, 8, generator=g), torch.randn(4, 7, 32, generator=g), torch.randn(4, 16, generator=g)
    with torch.no_grad():
        return unet(x, torch.full((4,), 300), encoder_hidden_states=ctx, class_labels=cam).sample


def test_key_map_agrees_with_diffusers_own_ldm_converter() -> None:
    """An independent implementation of the LDM UNet layout: diffusers' single-file converter."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    unet = tiny_multiview_unet(seed=0)
    ldm = to_ldm_state_dict(unet)
    config = dict(unet.config)
    config["class_embed_type"] = None  # diffusers' converter knows no camera MLP
    theirs = convert_ldm_unet_checkpoint({k: v for k, v in ldm.items() if ".camera_embed." not in k}, config)
    ours = {k: v for k, v in unet.state_dict().items() if not k.startswith("class_embedding.")}
    assert set(theirs) == set(ours)
    assert all(torch.equal(theirs[k], ours[k]) for k in ours)
    mapping = ldm_key_map(unet)
    assert mapping["class_embedding.linear_1.weight"] == "camera_embed.0.weight"
    assert mapping["class_embedding.linear_2.bias"] == "camera_embed.2.bias"
    assert len(set(mapping.values())) == len(mapping)  # one LDM name per parameter


@pytest.mark.parametrize("kind", ["pt", "st"])
def test_original_single_file_gives_the_diffusers_layout_outputs(folders: dict[str, Path], kind: str) -> None:
    from_file = load_components(str(folders[kind]), "cpu", base_model=str(folders["sd"]))
    from_folder = load_components(str(folders["mv"]), "cpu")
    assert type(from_file.unet).__name__ == "MultiViewUNet2DConditionModel"
    torch.testing.assert_close(_out(from_file.unet), _out(from_folder.unet), rtol=0, atol=0)


def test_port_folder_with_ldm_unet_loads_the_same(folders: dict[str, Path]) -> None:
    port = folders["root"] / "port"
    shutil.copytree(folders["mv"], port)
    shutil.rmtree(port / "unet")
    (port / "unet").mkdir()
    (port / "unet" / "config.json").write_text(json.dumps({"_class_name": "MultiViewUNetModel", **TINY_LDM_CONFIG}))
    save_file(to_ldm_state_dict(tiny_multiview_unet(seed=0), prefix=""),
              str(port / "unet" / "diffusion_pytorch_model.safetensors"))
    comps = load_components(str(port), "cpu")
    torch.testing.assert_close(_out(comps.unet), _out(load_components(str(folders["mv"]), "cpu").unet),
                               rtol=0, atol=0)


def test_every_key_must_be_used_and_every_weight_filled() -> None:
    unet = tiny_multiview_unet(seed=1)
    ldm = to_ldm_state_dict(unet, prefix="")
    with pytest.raises(MVDreamKindError, match="unexpected weight 'input_blocks.99.0.weight'"):
        load_ldm_weights(unet, {**ldm, "input_blocks.99.0.weight": torch.zeros(1)}, "x")
    short = dict(ldm)
    del short["middle_block.1.proj_out.bias"]
    with pytest.raises(MVDreamKindError, match="no weight 'middle_block.1.proj_out.bias'"):
        load_ldm_weights(unet, short, "x")
    wrong = {**ldm, "out.2.bias": torch.zeros(7)}
    with pytest.raises(MVDreamKindError, match="shape"):
        load_ldm_weights(unet, wrong, "x")


def _one_line_bad_input(exc: pytest.ExceptionInfo[A3DMeshError]) -> str:
    message = str(exc.value)
    assert "\n" not in message and exc.value.exit_code == 2
    return message


def test_checkpoint_of_another_architecture_is_refused(folders: dict[str, Path], tmp_path: Path) -> None:
    ldm = torch.load(folders["pt"], weights_only=True)
    plain_sd = {k: v for k, v in ldm.items() if ".camera_embed." not in k}  # an SD UNet: no camera MLP
    torch.save(plain_sd, tmp_path / "sd.pt")
    with pytest.raises(MVDreamKindError) as exc:
        load_components(str(tmp_path / "sd.pt"), "cpu", base_model=str(folders["sd"]))
    assert "camera" in _one_line_bad_input(exc)
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "other.pt")  # no UNet at all
    with pytest.raises(MVDreamKindError) as exc:
        load_components(str(tmp_path / "other.pt"), "cpu", base_model=str(folders["sd"]))
    assert "no LDM UNet" in _one_line_bad_input(exc)


def test_truncated_missing_and_object_pickles_are_refused(folders: dict[str, Path], tmp_path: Path) -> None:
    data = folders["pt"].read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "cut.safetensors").write_bytes(folders["st"].read_bytes()[:1000])
    torch.save({"w": torch.zeros(2), "extra": Path("x")}, tmp_path / "objects.pt")  # not weights only
    for name in ("cut.pt", "cut.safetensors", "objects.pt", "missing.pt"):
        with pytest.raises(MVDreamWeightsError) as exc:
            load_components(str(tmp_path / name), "cpu", base_model=str(folders["sd"]))
        message = _one_line_bad_input(exc)
        assert name in message
        assert ("Python objects" in message) == (name == "objects.pt")  # refused, never unpickled


def test_port_folder_missing_a_part_is_refused(folders: dict[str, Path], tmp_path: Path) -> None:
    shutil.copytree(folders["mv"], tmp_path / "port")
    shutil.rmtree(tmp_path / "port" / "vae")
    with pytest.raises(MVDreamWeightsError) as exc:
        load_components(str(tmp_path / "port"), "cpu")
    assert "has no vae" in _one_line_bad_input(exc)
    shutil.copytree(folders["mv"], tmp_path / "noweights")
    (tmp_path / "noweights" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(MVDreamWeightsError) as exc:
        load_components(str(tmp_path / "noweights"), "cpu")
    _one_line_bad_input(exc)


@pytest.mark.parametrize("preset", ["mvdream", "mvdream-fast"])
def test_presets_name_the_multiview_prior_with_4_view_groups(preset: str) -> None:
    from a3d_mesh.config import load_config
    from a3d_mesh.guidance.mvdream import check_multiview_cameras, multiview_source

    cfg = load_config(preset)
    assert multiview_source(cfg.guidance.model) == ("prior", "mvdream-sd2.1")
    check_multiview_cameras(cfg.camera)
    assert not cfg.guidance.view_prompts.enabled
    assert cfg.coarse.sds.resolution == cfg.refine.sds.resolution == 256 and cfg.coarse.sds.guidance_scale == 50


def test_uncached_prior_offline_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from a3d_mesh.guidance import GuidanceModelError

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GuidanceModelError) as exc:
        load_components("mvdream-sd2.1", "cpu")
    assert exc.value.exit_code == 1 and "hf download ashawkey/mvdream-sd2.1-diffusers" in str(exc.value)


def test_hub_id_of_a_cached_port_loads_from_the_cache(folders: dict[str, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from a3d_mesh.guidance import GuidanceModelError
    from a3d_mesh.guidance.mvdream import multiview_source

    repo = tmp_path / "models--someone--mv-port"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    shutil.copytree(folders["mv"], repo / "snapshots" / ("0" * 40))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert multiview_source("someone/mv-port") == ("hub", "someone/mv-port")
    assert multiview_source("someone/other") is None  # not cached: the SD loader decides
    comps = load_components("someone/mv-port", "cpu")
    torch.testing.assert_close(_out(comps.unet), _out(load_components(str(folders["mv"]), "cpu").unet), rtol=0, atol=0)
    shutil.rmtree(repo / "snapshots" / ("0" * 40) / "vae")  # an incomplete cache, offline
    with pytest.raises(GuidanceModelError) as exc:
        load_components("someone/mv-port", "cpu")
    assert "\n" not in str(exc.value)
