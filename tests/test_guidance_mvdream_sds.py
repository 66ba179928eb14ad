"""MVDream SDS: camera convention, 4-view groups, x0-reconstruction loss, A3D conditioning, the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from a3d_mesh.cameras import CameraConfig, make_cameras, sample_cameras
from a3d_mesh.config import ConfigError, load_config
from a3d_mesh.guidance import PromptEmbeddings, SDSConfig, ViewPromptConfig, encode_prompts, load_components
from a3d_mesh.guidance.mvdream import (MVDreamSDS, check_multiview_cameras, mvdream_camera_from_angles,
                                       mvdream_camera_from_view, rescale_x0)
from a3d_mesh.guidance.schedule import sample_timesteps
from a3d_mesh.guidance.views import num_views

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def comps(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    os.environ["A3D_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        return load_components("tiny-mvdream", "cpu")
    finally:
        del os.environ["A3D_CACHE"]


@pytest.fixture(scope="module")
def emb(comps) -> PromptEmbeddings:  # noqa: ANN001
    return encode_prompts(comps, ["a dog animal", "a cat animal"], ["cat", "dog"], None)


@pytest.fixture(scope="module")
def sds(comps, emb: PromptEmbeddings) -> MVDreamSDS:  # noqa: ANN001
    return MVDreamSDS(comps, emb, SDSConfig(resolution=64, guidance_scale=50.0, input="latent"), seed=0)


# --- cameras ---------------------------------------------------------------------------------

def test_front_and_side_cameras_map_to_mvdream_azimuth_0_and_90() -> None:
    """Expected values worked out by hand from MVDream's camera_utils.get_camera (blender_coord)."""
    cams = mvdream_camera_from_angles(torch.tensor([0.0, 0.0]), torch.tensor([0.0, 90.0]))
    front = torch.tensor([1, 0, 0, 0, 0, 0, -1, -1, 0, 1, 0, 0, 0, 0, 0, 1.0])  # at -Y in Blender's z-up frame
    side = torch.tensor([0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1.0])  # at +X
    torch.testing.assert_close(cams[0], front, atol=1e-6, rtol=0)
    torch.testing.assert_close(cams[1], side, atol=1e-6, rtol=0)
    up = mvdream_camera_from_angles(torch.tensor([30.0]), torch.tensor([0.0])).view(4, 4)
    torch.testing.assert_close(up[:3, 3], torch.tensor([0.0, -(3**0.5) / 2, 0.5]), atol=1e-6, rtol=0)  # z is up


def test_camera_conditioning_ignores_distance_and_fov_and_is_a_rigid_pose() -> None:
    g = torch.Generator().manual_seed(0)
    el, az = torch.rand(6, generator=g) * 60 - 20, torch.rand(6, generator=g) * 360 - 180
    cams = make_cameras(el, az, torch.rand(6, generator=g) * 2 + 1.5, torch.rand(6, generator=g) * 40 + 20)
    from_view = mvdream_camera_from_view(cams.view)
    torch.testing.assert_close(from_view, mvdream_camera_from_angles(el, az), atol=1e-5, rtol=0)
    m = from_view.view(6, 4, 4)
    torch.testing.assert_close(m[:, :3, :3] @ m[:, :3, :3].transpose(1, 2), torch.eye(3).expand(6, 3, 3), atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(m[:, :3, 3].norm(dim=-1), torch.ones(6), atol=1e-5, rtol=0)


def test_view_groups_are_spread_and_share_elevation() -> None:
    cfg = CameraConfig(views_per_step=8, view_group=4)
    cams = sample_cameras(cfg, torch.Generator().manual_seed(3))
    az, el = cams.azimuth.view(2, 4), cams.elevation.view(2, 4)
    gaps = (az.diff(dim=1) % 360 + 360) % 360
    torch.testing.assert_close(gaps, torch.full((2, 3), 90.0), atol=1e-4, rtol=0)
    assert (el == el[:, :1]).all() and el[0, 0] != el[1, 0]
    check_multiview_cameras(cfg)
    with pytest.raises(ValueError, match="view_group=4"):
        check_multiview_cameras(CameraConfig(views_per_step=8, view_group=0))
    with pytest.raises(ValueError, match="multiple of 4"):
        check_multiview_cameras(CameraConfig(views_per_step=2))
    with pytest.raises(ConfigError, match="camera.view_group"):
        load_config("tiny", ["camera.views_per_step=4", "camera.view_group=3"])


# --- the loss --------------------------------------------------------------------------------

def test_rescale_x0_matches_the_plain_std_per_group() -> None:
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 4, 4, 4, generator=g) * torch.tensor([3.0] * 4 + [0.5] * 4).view(8, 1, 1, 1)
    plain = torch.randn(8, 4, 4, 4, generator=g)
    assert torch.equal(rescale_x0(x0, plain, 4, 0.0), x0)
    full = rescale_x0(x0, plain, 4, 1.0)
    torch.testing.assert_close(full.view(2, -1).std(dim=1), plain.view(2, -1).std(dim=1))
    half = rescale_x0(x0, plain, 4, 0.5)
    torch.testing.assert_close(half, 0.5 * (full + x0))


def test_gradient_is_z_minus_guided_x0_with_mixed_conditioning(sds: MVDreamSDS, comps) -> None:  # noqa: ANN001
    g = torch.Generator().manual_seed(7)
    z = torch.randn(4, 4, 8, 8, generator=g).requires_grad_(True)
    u = torch.tensor([0.3, 0.7])
    cams = sds.camera_views(torch.full((4,), 10.0), torch.arange(4.0) * 90)
    out = sds(z, u, 0.0, generator=torch.Generator().manual_seed(11), views=cams)
    out.loss.backward()
    # Reproduce the draw: one t per group, then the noise; then x0 by hand with tau(u) = sum u_k tau_k.
    ref = torch.Generator().manual_seed(11)
    lo, hi = sds.timestep_range(0.0)
    t = sample_timesteps(lo, hi, 1, ref, "cpu").repeat_interleave(4)
    assert torch.equal(out.t, t)
    noise = torch.randn(z.shape, generator=ref)
    a = sds.alphas_cumprod[t].view(-1, 1, 1, 1)
    z_t = a.sqrt() * z.detach() + (1 - a).sqrt() * noise
    emb = sds.embeddings
    # tau(u) = 0.3 tau_0 + 0.7 tau_1, summed as one dot product the way the guidance sums it (the
    # rounding of `0.3 a + 0.7 b` differs in the last bit, which CFG 50 magnifies).
    tau = torch.tensordot(u, torch.stack([emb.cond[0], emb.cond[1]]), dims=1).expand(4, -1, -1)
    tau_neg = torch.tensordot(u, torch.stack([emb.uncond[0], emb.uncond[1]]), dims=1).expand(4, -1, -1)
    # One UNet call on [cond; uncond], as SDS makes it: a batch of 4 and one of 8 round differently
    # in the last bits (by CPU), and CFG 50 / sqrt(alpha_bar) magnifies that past any tight tolerance.
    with torch.no_grad():
        e_c, e_u = comps.unet(torch.cat([z_t, z_t]), torch.cat([t, t]), encoder_hidden_states=torch.cat([tau, tau_neg]),
                              class_labels=torch.cat([cams, cams])).sample.chunk(2)
    x0 = (z_t - (1 - a).sqrt() * (e_u + 50.0 * (e_c - e_u))) / a.sqrt()
    x0 = rescale_x0(x0, (z_t - (1 - a).sqrt() * e_c) / a.sqrt(), 4, 0.5)
    torch.testing.assert_close(z.grad, (z.detach() - x0) / 4, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.loss, 0.5 * (z.detach() - x0).pow(2).sum() / 4, rtol=1e-4, atol=1e-3)


def test_rgb_gradients_are_finite_and_reach_the_renders(comps, emb: PromptEmbeddings) -> None:  # noqa: ANN001
    sds = MVDreamSDS(comps, emb, SDSConfig(resolution=64, guidance_scale=50.0), seed=0)
    images = torch.rand(8, 32, 32, 3, requires_grad=True)
    cams = sds.camera_views(torch.full((8,), 15.0), torch.arange(8.0) * 90)
    out = sds(images, torch.tensor([1.0, 0.0]), 0.5, views=cams)
    out.loss.backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0 and not out.nonfinite
    assert out.t[:4].unique().numel() == 1 and out.t[4:].unique().numel() == 1


def test_bad_batches_and_view_prompts_are_refused(sds: MVDreamSDS, comps, emb: PromptEmbeddings) -> None:  # noqa: ANN001
    z = torch.randn(3, 4, 8, 8)
    with pytest.raises(ValueError, match="groups of 4"):
        sds(z, torch.tensor([1.0, 0.0]), 0.1, views=torch.zeros(3, 16))
    with pytest.raises(ValueError, match="camera"):
        sds(torch.randn(4, 4, 8, 8), torch.tensor([1.0, 0.0]), 0.1)
    rule = ViewPromptConfig()
    views = num_views(rule)
    with_views = PromptEmbeddings(emb.cond_views.expand(views, -1, -1, -1), emb.uncond_views.expand(views, -1, -1, -1),
                                  emb.prompts, emb.negatives, rule)
    with pytest.raises(ValueError, match="view prompts"):
        MVDreamSDS(comps, with_views, SDSConfig(resolution=64))


# --- the run ---------------------------------------------------------------------------------

MV_OVERRIDES = ["guidance.model=tiny-mvdream", "camera.views_per_step=4", "camera.view_group=4",
                "coarse.steps=2", "coarse.resolution=16", "coarse.samples_per_ray=16", "refine.steps=2",
                "refine.resolution=32", "refine.init_steps=60", "refine.init_views=2", "preview.resolution=32", "preview.views=2",
                "preview.sweep_frames=2", "export.texture_size=64", "checkpoint_every=50"]


def test_build_guides_picks_mvdream_and_checks_cameras_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from a3d_mesh.prompts import PromptSet
    from a3d_mesh.progress import Progress
    from a3d_mesh.train.pipeline import build_guides

    monkeypatch.setenv("A3D_CACHE", str(tmp_path))
    prompts = PromptSet(["dog", "cat"], ["a dog", "a cat"], ["cat", "dog"])
    cfg = load_config("tiny", MV_OVERRIDES)
    guide_c, guide_r = build_guides(cfg, prompts, torch.device("cpu"), Progress(), tmp_path)
    assert isinstance(guide_c.sds, MVDreamSDS) and isinstance(guide_r.sds, MVDreamSDS)
    bad = load_config("tiny", ["guidance.model=tiny-mvdream", "camera.views_per_step=2"])

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cameras must be checked before the model loads")

    monkeypatch.setattr("a3d_mesh.guidance.load_components", no_load)  # what train.guide.load_prior calls
    with pytest.raises(ValueError, match="groups of 4"):
        build_guides(bad, prompts, torch.device("cpu"), Progress(), tmp_path)


@pytest.mark.slow
def test_a3d_mesh_run_end_to_end_with_the_tiny_multiview_prior(tmp_path: Path) -> None:
    prompts = tmp_path / "pets.txt"
    prompts.write_text("dog: a dog animal\ncat: a cat animal\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "A3D_CACHE": str(tmp_path / "cache")}
    res = subprocess.run([sys.executable, "-m", "a3d_mesh_cli.main", "run", str(prompts), "--preset", "tiny",
                          "--out", str(tmp_path / "run"), *MV_OVERRIDES], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "run" / "manifest.json").is_file()
    assert "view-dependent prompts are not used" in res.stderr
    # Both stages were scored by the multi-view prior (the mesh was not empty at refine time).
    assert "[coarse] 2/2 sds" in res.stderr and "[refine] 2/2 sds" in res.stderr
    # A hybrid fine-tuned with the same multi-view prior (views in groups of 4, cameras passed).
    hyb = subprocess.run([sys.executable, "-m", "a3d_mesh_cli.main", "hybrid", str(tmp_path / "run"), "--hybrid",
                          "mix=dog@x>0,cat", "--hybrid-finetune", "1"], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=600)
    assert hyb.returncode == 0, hyb.stderr[-3000:]
    assert "[finetune mix] 1/1 sds" in hyb.stderr
    bad = subprocess.run([sys.executable, "-m", "a3d_mesh_cli.main", "run", str(prompts), "--preset", "tiny",
                          "--out", str(tmp_path / "bad"), "guidance.model=" + str(tmp_path / "missing.pt"),
                          "camera.views_per_step=4", "camera.view_group=4"], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert bad.returncode == 2 and "missing.pt" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad" / "checkpoints" / "coarse.pt").exists()


def test_single_view_sds_refuses_a_multiview_prior(comps, emb: PromptEmbeddings) -> None:  # noqa: ANN001
    from a3d_mesh.guidance import ModelKindError, SDSGuidance

    with pytest.raises(ModelKindError, match="multi-view") as exc:
        SDSGuidance(comps, emb, SDSConfig(resolution=64))
    assert exc.value.exit_code == 2 and "\n" not in str(exc.value)
