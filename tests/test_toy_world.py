"""The toy world: procedural families, training images, the prior's training command (exact resume)
and pixel-space SDS through the ordinary guidance loader."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from a3d_mesh.guidance import GuidanceModelError, SDSConfig, encode_prompts, load_components
from a3d_mesh.guidance import loader
from a3d_mesh.guidance.mvdream import MVDreamSDS, is_multiview_unet
from a3d_mesh.toy import shapes
from a3d_mesh.toy.data import DataConfig, make_dataset, make_near_misses, make_seatless
from a3d_mesh.toy.train import learning_rate, load_or_make_dataset, parse_args
from a3d_mesh.toy.train import main as train_main

pytestmark = pytest.mark.slow  # toy-world training and runs: not in the quick loop (-m 'not slow')


def _signed_volume(v: torch.Tensor, f: torch.Tensor) -> float:
    return float((v[f[:, 0]] * torch.cross(v[f[:, 1]], v[f[:, 2]], dim=-1)).sum() / 6)


def test_primitives_are_closed_outward_and_exact() -> None:
    v, f = shapes.box((0, 0, 0), (1, 2, 3))
    assert _signed_volume(v, f) == pytest.approx(6.0)
    v, f = shapes.cylinder(0.5, -0.5, 0.5, 0.0, 2.0, segments=64)
    # A 64-gon prism: area (n/2) r^2 sin(2 pi / n) times the height.
    assert _signed_volume(v, f) == pytest.approx(32 * 0.25 * torch.sin(torch.tensor(2 * torch.pi / 64)).item() * 2.0)
    # Closed: every edge is shared by exactly two faces, in opposite directions.
    edges = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    fwd = {tuple(e) for e in edges.tolist()}
    assert all((b, a) in fwd for a, b in fwd) and len(fwd) == edges.shape[0]


@pytest.mark.parametrize("family", shapes.FAMILIES)
def test_families_fit_the_scene_and_vary(family: str) -> None:
    t = shapes.template(family)
    lo, hi = t.verts.min(0).values, t.verts.max(0).values
    assert float(lo[1] + hi[1]) == pytest.approx(0.0, abs=1e-6)  # centred vertically
    assert float(t.verts.abs().max()) < 0.95  # inside the scene cube with a margin
    assert _signed_volume(t.verts, t.faces) > 0
    g = torch.Generator().manual_seed(0)
    a, b = shapes.sample_object(family, g), shapes.sample_object(family, g)
    assert a.params != b.params
    for obj in (a, b):
        for k, (lo_k, hi_k) in shapes.RANGES[family].items():
            assert lo_k <= obj.params[k] <= hi_k


def test_symmetry_orders_match_the_geometry() -> None:
    """Turning a shape by 360/order maps it onto itself; chairs and benches have no such turn."""

    def same_after(family: str, yaw: float) -> bool:
        t = shapes.template(family)
        r = shapes.rotate_yaw(t.verts, yaw)
        d = torch.cdist(r, t.verts).min(1).values.max()
        return bool(d < 1e-3)  # float32 rotation and cdist error is ~2e-4

    for family, order in shapes.SYMMETRY_ORDER.items():
        if order > 1:
            assert same_after(family, 360.0 / order), family
        assert not same_after(family, 180.0) or order % 2 == 0, family
    assert not same_after("chair", 90.0)


def test_rotate_yaw_turns_towards_plus_x() -> None:
    """+90 deg of yaw takes the +Z axis to +X (the camera azimuth convention)."""
    out = shapes.rotate_yaw(torch.tensor([[0.0, 0.0, 1.0]]), 90.0)
    assert torch.allclose(out, torch.tensor([[1.0, 0.0, 0.0]]), atol=1e-6)


def test_unknown_family_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown toy family 'sofa'"):
        shapes.template("sofa")


def test_filled_objects_are_the_near_misses_sds_makes() -> None:
    """A chair filled from its seat up is the column (seat footprint x full height, legs kept), a
    fill from the ground is one block; the bounding box, hence the placement, never changes."""
    chair = shapes.template("chair")
    p = chair.params
    column = shapes.filled(chair, p["seat_h"])
    block = shapes.filled(chair, 0.0)
    for near in (column, block):
        assert torch.equal(near.verts.min(0).values, chair.verts.min(0).values)
        assert torch.equal(near.verts.max(0).values, chair.verts.max(0).values)
    top = p["seat_h"] + p["thick"] + p["back_h"]
    upper = p["width"] * p["depth"] * (top - p["seat_h"])
    assert _signed_volume(column.verts, column.faces) == pytest.approx(upper + 4 * p["leg"] ** 2 * p["seat_h"], rel=1e-4)
    assert _signed_volume(block.verts, block.faces) == pytest.approx(p["width"] * p["depth"] * top, rel=1e-4)
    assert _signed_volume(column.verts, column.faces) > 2 * _signed_volume(chair.verts, chair.faces)
    stool = shapes.filled(shapes.template("stool"), 0.0)  # a stool fills to a cylinder, not a box
    assert _signed_volume(stool.verts, stool.faces) == pytest.approx(
        12 * 0.4 ** 2 * torch.sin(torch.tensor(2 * torch.pi / 24)).item() * (1.05 + 0.11), rel=1e-4)


@pytest.mark.parametrize("family", shapes.FAMILIES)
def test_without_seat_removes_exactly_the_seat_in_place(family: str) -> None:
    obj = shapes.template(family)
    p = obj.params
    bare = shapes.without_seat(obj)
    area = 12 * p["radius"] ** 2 * math.sin(2 * math.pi / 24) if family == "stool" else p["width"] * p["depth"]
    seat = area * p["thick"]  # the stool's seat is a 24-gon
    lost = _signed_volume(obj.verts, obj.faces) - _signed_volume(bare.verts, bare.faces)
    assert lost == pytest.approx(seat, rel=1e-3)  # parts do not overlap: the seat's volume, no more
    assert torch.equal(bare.verts.min(0).values[1], obj.verts.min(0).values[1])  # same ground: same placement


def test_near_misses_are_seeded_filled_objects_on_white() -> None:
    near = make_near_misses(8, seed=3)
    assert near.images.shape == (32, 32, 32, 3) and torch.equal(near.images, make_near_misses(8, seed=3).images)
    assert set(near.captions) == {""}
    real = make_dataset(8, seed=3).images
    fg_near = (near.images.float().mean(-1) < 240).float().mean((1, 2))
    fg_real = (real.float().mean(-1) < 240).float().mean((1, 2))
    assert bool((near.images[:, 0, 0] > 240).all())
    # Filled shapes cover more of the frame than the open furniture they are made from.
    assert float(fg_near.mean()) > 1.2 * float(fg_real.mean())


def test_seatless_near_misses_are_seeded_open_frames_on_white() -> None:
    bare = make_seatless(8, seed=3)
    assert bare.images.shape == (32, 32, 32, 3) and torch.equal(bare.images, make_seatless(8, seed=3).images)
    assert bool((bare.images[:, 0, 0] > 240).all())
    real = make_dataset(8, seed=3).images
    fg_bare = (bare.images.float().mean(-1) < 240).float().mean((1, 2))
    fg_real = (real.float().mean(-1) < 240).float().mean((1, 2))
    # Without the seat or top (the broadest part) the objects cover clearly less of the frame.
    assert float(fg_bare.mean()) < 0.85 * float(fg_real.mean())


def test_dataset_is_seeded_and_captioned() -> None:
    data, again = make_dataset(8, seed=3), make_dataset(8, seed=3)
    imgs, caps = data.images, data.captions
    assert imgs.shape == (32, 32, 32, 3) and imgs.dtype == torch.uint8 and data.angles.shape == (32, 2)
    assert torch.equal(imgs, again.images) and caps == again.captions and torch.equal(data.angles, again.angles)
    assert set(caps) <= {""} | {f"a {f}" for f in shapes.FAMILIES} | {
        f"a {c} {f}" for f in shapes.FAMILIES for c in shapes.COLOURS}
    # White background around an object that covers a real part of the frame.
    fg = (imgs.float().mean(-1) < 240).float().mean((1, 2))
    assert bool((fg > 0.03).all()) and bool((fg < 0.6).all())
    assert bool((imgs[:, 0, 0] > 240).all())


def test_views_come_in_spread_groups_of_four_with_one_caption() -> None:
    """What the multi-view prior trains on: each object's 4 views share caption, elevation and
    object, and stand 90 deg apart in azimuth (MVDream's groups); the pose is canonical, so the
    front view (azimuth near 0) of a chair shows the seat's front edge, not its back."""
    data = make_dataset(8, seed=3)
    groups = data.angles.view(8, 4, 2)
    assert all(len(set(data.captions[4 * i:4 * i + 4])) == 1 for i in range(8))
    assert torch.equal(groups[:, :, 0], groups[:, :1, 0].expand(8, 4))
    steps = torch.remainder(groups[:, 1:, 1] - groups[:, :-1, 1], 360.0)
    assert torch.allclose(steps, torch.full_like(steps, 90.0), atol=1e-3)


def comps_is_multiview(folder: Path) -> bool:
    return is_multiview_unet(load_components(str(folder), "cpu").unet)


def _train(out: Path, *extra: str) -> None:
    args = ["--out", str(out), "--objects", "8", "--batch", "4", "--warmup", "2", "--checkpoint-every", "2",
            "--sample-steps", "2", "--threads", "1", *extra]
    assert train_main(args) == 0


def test_training_resumes_exactly_and_saves_a_loadable_prior(tmp_path: Path) -> None:
    _train(tmp_path / "whole", "--steps", "4")
    _train(tmp_path / "split", "--steps", "2")
    _train(tmp_path / "split", "--steps", "4", "--resume")
    a = torch.load(tmp_path / "whole" / "train_state.pt")
    b = torch.load(tmp_path / "split" / "train_state.pt")
    assert a["step"] == b["step"] == 4 and a["losses"] == b["losses"]
    for k in a["unet"]:
        assert torch.equal(a["unet"][k], b["unet"][k]), k
    assert all(torch.equal(x, y) for x, y in zip(a["ema"], b["ema"]))
    assert (tmp_path / "whole" / "samples.png").is_file()
    comps = load_components(str(tmp_path / "whole" / "prior"), "cpu")
    assert comps.vae is None and comps.unet.config.in_channels == 3
    assert comps.unet.dtype == torch.float32  # saved in half, loaded in float32 on CPU
    # v-prediction by default (toy.prior: epsilon drew tinted backgrounds), recorded where SDS reads it.
    assert comps.prediction_type == "v_prediction"
    assert json.loads((tmp_path / "whole" / "prior" / "a3d_toy.json").read_text())["format"] == 2


def test_a_batch_of_broken_view_groups_is_refused_before_rendering(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        train_main(["--out", str(tmp_path / "t"), "--batch", "6"])
    assert "multiple of 4" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "t").exists()


def test_a_continued_run_with_near_misses_is_one_run(tmp_path: Path) -> None:
    """Raising --steps past a finished decay (--decay-end at the old end) and adding near misses
    (filled and seatless) from the old end on continues the old run exactly: the same as one run with those arguments."""
    whole = ["--decay-start", "2", "--decay-end", "4", "--lr-final", "1e-4", "--near-misses", "4", "--seatless", "4",
             "--near-miss-start", "4"]
    _train(tmp_path / "whole", "--steps", "6", *whole)
    _train(tmp_path / "split", "--steps", "4", "--decay-start", "2")
    first = torch.load(tmp_path / "split" / "train_state.pt")
    _train(tmp_path / "split", "--steps", "6", *whole, "--resume")
    a = torch.load(tmp_path / "whole" / "train_state.pt")
    b = torch.load(tmp_path / "split" / "train_state.pt")
    assert a["losses"] == b["losses"] and a["losses"][:4] == first["losses"]
    assert all(torch.equal(x, y) for x, y in zip(a["ema"], b["ema"]))
    assert (tmp_path / "whole" / "near_misses.pt").is_file() and (tmp_path / "whole" / "seatless.pt").is_file()
    info = json.loads((tmp_path / "whole" / "prior" / "a3d_toy.json").read_text())
    assert info["images"] == 4 * (8 + 4 + 4)  # objects, near misses and seatless, 4 views each
    assert info["views_per_group"] == 4 and comps_is_multiview(tmp_path / "whole" / "prior")
    args = parse_args(["--steps", "6", *whole, "--lr", "1e-3", "--warmup", "1"])
    assert [round(learning_rate(args, s), 6) for s in range(6)] == [1e-3, 1e-3, 1e-3, 5.5e-4, 1e-4, 1e-4]


def test_a_cached_training_set_of_older_objects_is_rendered_anew(tmp_path: Path) -> None:
    """The cache is keyed on the data version too: after the shapes change, an old training set in
    the output folder must not be trained on silently."""
    calls: list[int] = []

    def make(n: int, seed: int) -> torch.Tensor:
        calls.append(n)
        return torch.full((n,), seed)

    torch.save({"objects": 3, "seed": 1, "version": 1, "data": torch.zeros(3)}, tmp_path / "d.pt")
    assert torch.equal(load_or_make_dataset(tmp_path, 3, 1, "d.pt", make), torch.ones(3)) and calls == [3]
    assert torch.equal(load_or_make_dataset(tmp_path, 3, 1, "d.pt", make), torch.ones(3)) and calls == [3]
    load_or_make_dataset(tmp_path, 3, 2, "d.pt", make)  # another seed: rendered anew
    assert calls == [3, 3]


def test_pixel_space_sds_puts_the_gradient_on_the_image(tmp_path: Path) -> None:
    _train(tmp_path / "p", "--steps", "1")
    comps = load_components(str(tmp_path / "p" / "prior"), "cpu")
    emb = encode_prompts(comps, ["a red chair", "a blue table"])
    sds = MVDreamSDS(comps, emb, SDSConfig(guidance_scale=10.0, resolution=32), seed=0)
    img = torch.full((4, 64, 64, 3), 0.5, requires_grad=True)  # one group of 4 views
    views = sds.camera_views(torch.full((4,), 15.0), torch.tensor([0.0, 90.0, 180.0, -90.0]))
    out = sds(img, torch.tensor([0.5, 0.5]), progress=0.3, views=views)
    out.loss.backward()
    assert img.grad is not None and bool(torch.isfinite(img.grad).all()) and float(img.grad.abs().sum()) > 0
    # The gradient is (z - x0) / B on the [-1, 1] image at 32 px: back through the 2x resize and the
    # x -> 2x - 1 map, so it is non-zero everywhere the (smooth) SDS target differs.
    assert out.grad_norm > 0 and not out.nonfinite
    # Its x0 target stays an image, however far a large scale at a high t overshoots.
    z_t = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.full((4,), 980)
    wild = MVDreamSDS(comps, emb, SDSConfig(guidance_scale=1000.0, resolution=32), seed=0)
    x0 = wild.predict_x0(z_t, t, torch.tensor([0.5, 0.5]), views)
    assert float(x0.abs().max()) <= 1.0 and float(x0.std()) > 0.1


def test_missing_toy_prior_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "bundled_toy_prior", lambda: tmp_path / "nowhere")
    with pytest.raises(GuidanceModelError) as info:
        load_components("toy", "cpu")
    msg = str(info.value)
    assert "\n" not in msg and "python -m a3d_mesh.toy.train" in msg


def test_a_multiview_bundled_prior_loads_as_toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The day the bundled prior is a multi-view one, ``guidance.model=toy`` must reach the MVDream
    loader (camera input, no VAE needed) rather than the SD one."""
    _train(tmp_path / "p", "--steps", "1")
    monkeypatch.setattr(loader, "bundled_toy_prior", lambda: tmp_path / "p" / "prior")
    comps = load_components("toy", "cpu")
    assert is_multiview_unet(comps.unet) and comps.vae is None and comps.native_resolution == 32
