"""Baking (UV-space raster, seam filling) and ``export_asset`` end to end on an aligned set + hybrid."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from a3d_mesh.export import ExportError, bake_texture, export_asset, set_transform, unwrap
from a3d_mesh.export.bake import dilate, pull_push
from test_export_writers import assert_valid_glb


def linear_field(p: torch.Tensor) -> torch.Tensor:
    """A smooth albedo in [0.2, 0.8] for points in [-0.5, 0.5]^3."""
    return 0.2 + 0.6 * (p + 0.5).clamp(0.0, 1.0)


def sample_bilinear(tex: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Sample a top-row-first ``[H,W,C]`` texture at v-up ``uv [N,2]`` (GL bilinear, clamped)."""
    h, w = tex.shape[:2]
    x = np.clip(uv[:, 0] * w - 0.5, 0, w - 1)
    y = np.clip((1.0 - uv[:, 1]) * h - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = tex[y0, x0] * (1 - fx) + tex[y0, x1] * fx
    bot = tex[y1, x0] * (1 - fx) + tex[y1, x1] * fx
    return top * (1 - fy) + bot * fy


@pytest.fixture(scope="module")
def unwrapped():
    m = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    return unwrap(m.vertices, m.faces, timeout_s=60, texture_size=128)


@pytest.fixture(scope="module")
def baked(unwrapped) -> np.ndarray:
    return bake_texture(unwrapped.verts, unwrapped.faces, unwrapped.uv, linear_field, texture_size=128)


def test_bake_reproduces_the_field_at_the_surface(unwrapped, baked) -> None:
    assert baked.shape == (128, 128, 3) and baked.dtype == np.float32
    corners = unwrapped.faces
    uv_c = unwrapped.uv[corners].mean(1)
    world_c = unwrapped.verts[corners].mean(1)
    want = linear_field(torch.from_numpy(world_c)).numpy()
    err = np.abs(sample_bilinear(baked, uv_c) - want).max(1)
    assert np.median(err) < 0.01 and err.max() < 0.08, (np.median(err), err.max())


def test_bake_fills_every_texel_so_mips_never_see_black(baked) -> None:
    level = baked
    for _ in range(6):  # full texture, then 5 box-filtered mip levels
        assert level.min() >= 0.2 - 1e-4 and level.max() <= 0.8 + 1e-4
        h, w = level.shape[:2]
        level = level.reshape(h // 2, 2, w // 2, 2, 3).mean((1, 3))


def test_bake_evaluates_color_fn_in_bounded_chunks(unwrapped) -> None:
    sizes: list[int] = []

    def fn(p: torch.Tensor) -> torch.Tensor:
        sizes.append(p.shape[0])
        return torch.full_like(p, 0.5)

    tex = bake_texture(unwrapped.verts, unwrapped.faces, unwrapped.uv, fn, texture_size=64, chunk=500)
    assert len(sizes) > 1 and max(sizes) <= 500
    np.testing.assert_allclose(tex, 0.5, atol=1e-6)


def test_pull_push_fills_holes_and_keeps_covered_texels() -> None:
    img = torch.zeros(9, 7, 3)
    mask = torch.zeros(9, 7, dtype=torch.bool)
    img[2, 3], mask[2, 3] = torch.tensor([0.1, 0.5, 0.9]), True
    img[7, 1], mask[7, 1] = torch.tensor([0.3, 0.3, 0.3]), True
    grown, gmask = dilate(img, mask, 1)
    assert int(gmask.sum()) == 9 + 9 and torch.equal(grown[2, 3], img[2, 3])
    out = pull_push(grown, gmask)
    assert torch.equal(out[gmask], grown[gmask])
    lo, hi = torch.tensor([0.1, 0.3, 0.3]), torch.tensor([0.3, 0.5, 0.9])
    assert bool(((out >= lo - 1e-6) & (out <= hi + 1e-6)).all())


# ---------------------------------------------------------------- export_asset on a set
def hybrid_field(p: torch.Tensor) -> torch.Tensor:
    """u(x): red object for x < 0, blue object for x > 0, blended smoothly over |x| < 0.1."""
    a = ((p[:, :1] + 0.1) / 0.2).clamp(0, 1)
    a = a * a * (3 - 2 * a)
    red, blue = torch.tensor([0.9, 0.1, 0.1]), torch.tensor([0.1, 0.1, 0.9])
    return (1 - a) * red + a * blue


def test_export_set_and_hybrid(tmp_path) -> None:
    ball = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    ball.apply_translation([0.3, 0.0, 0.0])
    box = trimesh.creation.box(extents=[0.4, 0.4, 0.4])
    box.apply_translation([-0.3, -0.1, 0.0])
    hybrid = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    meshes = {"ball": (ball, linear_field), "box": (box, None), "hybrid_ball_box": (hybrid, hybrid_field)}
    transform = set_transform([m.vertices for m, _ in meshes.values()], height_m=1.5)
    seen: list[torch.Tensor] = []

    def record(fn):
        def wrapped(p: torch.Tensor) -> torch.Tensor:
            seen.append(p)
            return fn(p)
        return wrapped

    records, exported = {}, []
    for name, (m, fn) in meshes.items():
        verts = torch.tensor(m.vertices, dtype=torch.float32)
        rec = export_asset(name, verts, torch.tensor(m.faces), record(fn) if fn else None, tmp_path,
                           formats=("glb", "obj"), texture_size=64, transform=transform)
        records[name] = json.loads(json.dumps(rec))  # manifest records must be JSON-ready
        assert rec["files"] == {"glb": f"{name}.glb", "obj": f"{name}/{name}.obj"}
        for rel, digest in rec["sha256"].items():
            assert hashlib.sha256((tmp_path / rel).read_bytes()).hexdigest() == digest
        glb = tmp_path / rec["files"]["glb"]
        assert_valid_glb(glb)
        g = list(trimesh.load(glb, process=False).geometry.values())[0]
        assert g.vertices.shape[0] == rec["n_vertices"] and g.faces.shape[0] == rec["n_faces"]
        exported.append(np.asarray(g.vertices))
        assert rec["uv"]["method"] == "xatlas" and rec["transform"] == transform.to_dict()
    # colour fields saw world-frame points (before the transform), never the metre-scaled ones.
    pts = torch.cat(seen)
    assert float(pts.abs().max()) <= 0.61 and float(pts[:, 1].min()) < -0.2
    # One ground plane, one scale: the set stands on y = 0 and spans height_m.
    all_v = np.concatenate(exported)
    assert all_v[:, 1].min() == pytest.approx(0.0, abs=1e-5)
    assert all_v[:, 1].max() == pytest.approx(1.5, abs=1e-4)
    # Relative placement survives: the ball's centre stays 0.6 world units (x scale) from the box's.
    centre = lambda v: (v.min(0) + v.max(0)) / 2  # noqa: E731
    np.testing.assert_allclose(centre(exported[0]) - centre(exported[1]),
                               transform.scale * np.array([0.6, 0.1, 0.0]), atol=1e-4)
    # The hybrid texture holds both objects' colours.
    tex = np.asarray(trimesh.load(tmp_path / "hybrid_ball_box.glb", process=False).geometry[
        "hybrid_ball_box"].visual.material.baseColorTexture.convert("RGB")).reshape(-1, 3).astype(int)
    assert ((tex[:, 0] > 200) & (tex[:, 2] < 60)).any() and ((tex[:, 2] > 200) & (tex[:, 0] < 60)).any()
    assert records["box"]["cleanup"]["output"]["faces"] == 12


def test_export_asset_decimates_to_budget(tmp_path) -> None:
    m = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    rec = export_asset("ball", m.vertices, m.faces, None, tmp_path, texture_size=32, target_faces=200)
    assert rec["n_faces"] <= 200 and rec["cleanup"]["decimated"]["from_faces"] == 1280


@pytest.mark.parametrize(
    "kwargs, match",
    [({"name": "../evil"}, "name"), ({"formats": ("stl",)}, "unknown export format"),
     ({"verts": np.zeros((0, 3)), "faces": np.zeros((0, 3), int)}, "empty")],
)
def test_export_asset_user_errors(tmp_path, kwargs: dict, match: str) -> None:
    m = trimesh.creation.box()
    args = {"name": "box", "verts": m.vertices, "faces": m.faces, "color_fn": None, "out_dir": tmp_path}
    with pytest.raises(ExportError, match=match):
        export_asset(**{**args, **kwargs})
    assert list(tmp_path.iterdir()) == []


def test_export_asset_checks_blender_before_writing_anything(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    m = trimesh.creation.box()
    with pytest.raises(ExportError, match="Blender"):
        export_asset("box", m.vertices, m.faces, None, tmp_path / "out", formats=("glb", "fbx"))
    assert not (tmp_path / "out").exists()
