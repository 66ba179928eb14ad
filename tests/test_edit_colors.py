"""An edit input's own colours: per-vertex colours (PLY, OBJ) and a texture with UVs (GLB, OBJ) load
as a surface colour field, survive normalisation and the run folder, and the reconstruction target
of object 0 is rendered in them (a flat colour when the input has none)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from a3d_mesh.cameras import orbit_cameras
from a3d_mesh.config import load_config
from a3d_mesh.run.folder import INPUT_COLORS, INPUT_FILE
from a3d_mesh.train.edit import prepare_input, save_input
from a3d_mesh.prompts import parse_prompts
from a3d_mesh.meshio import SurfaceColors, load_colored_mesh
from a3d_mesh.train.guide import ImageTargetGuide
from a3d_mesh.progress import Progress
from a3d_mesh.train.pipeline import build_guides

RED, GREEN = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])


def vertex_colored(path: Path) -> np.ndarray:
    """An icosphere whose vertex colours are (position + 1) / 2; returns those colours [V,3] in [0,1]."""
    m = trimesh.creation.icosphere(subdivisions=2)
    rgb = np.round((m.vertices + 1) / 2 * 255).astype(np.uint8)
    m.visual = trimesh.visual.ColorVisuals(m, vertex_colors=rgb)
    m.export(path)
    return rgb / 255.0


def textured(path: Path) -> None:
    """A box (extents 1.2 x 0.8 x 0.8) textured red where x < 0 and green where x > 0: u follows x.
    GLB gets a glTF PBR material (white base colour factor), OBJ an MTL with map_Kd."""
    m = trimesh.creation.box(extents=[1.2, 0.8, 0.8])
    uv = np.stack([(m.vertices[:, 0] + 0.6) / 1.2 * 0.8 + 0.1, np.full(len(m.vertices), 0.5)], -1)
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, :32] = (255, 0, 0)
    img[:, 32:] = (0, 255, 0)
    if path.suffix == ".glb":
        mat = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.fromarray(img), baseColorFactor=[255, 255, 255, 255])
        m.visual = trimesh.visual.TextureVisuals(uv=uv, material=mat)
    else:
        m.visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(img))
    m.export(path)


@pytest.mark.parametrize("suffix", [".ply", ".obj"])
def test_vertex_colours_load(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"c{suffix}"
    rgb = vertex_colored(path)
    v, f, colors = load_colored_mesh(path)
    assert isinstance(colors, SurfaceColors) and v.shape == (162, 3) and f.shape == (320, 3)
    # Colours interpolate across faces: at the vertices they are the vertex colours.
    got = colors(v).numpy()
    np.testing.assert_allclose(got, rgb, atol=0.03)
    # Between vertices too (the colour is linear in position within a face, and so is (p + 1) / 2).
    pts = torch.tensor(trimesh.sample.sample_surface(trimesh.Trimesh(v.numpy(), f.numpy()), 500, seed=1)[0], dtype=torch.float32)
    np.testing.assert_allclose(colors(pts).numpy(), (pts.numpy() + 1) / 2, atol=0.03)


@pytest.mark.parametrize("suffix", [".glb", ".obj"])
def test_texture_loads_at_surface_points(tmp_path: Path, suffix: str) -> None:
    textured(tmp_path / f"t{suffix}")
    if suffix == ".obj":
        assert (tmp_path / "material.mtl").is_file()  # the texture really travels through MTL + PNG
    v, f, colors = load_colored_mesh(tmp_path / f"t{suffix}")
    assert colors is not None
    pts = torch.tensor(trimesh.sample.sample_surface(trimesh.Trimesh(v.numpy(), f.numpy()), 2000, seed=2)[0], dtype=torch.float32)
    rgb = colors(pts).numpy()
    left, right = pts[:, 0].numpy() < -0.1, pts[:, 0].numpy() > 0.1
    np.testing.assert_allclose(rgb[left], np.broadcast_to(RED, rgb[left].shape), atol=0.02)
    np.testing.assert_allclose(rgb[right], np.broadcast_to(GREEN, rgb[right].shape), atol=0.02)


def test_uncoloured_meshes_have_no_colours(tmp_path: Path) -> None:
    for name in ("p.ply", "p.obj", "p.glb"):
        trimesh.creation.icosphere(subdivisions=1).export(tmp_path / name)
        assert load_colored_mesh(tmp_path / name)[2] is None, name


def front_halves(rgb: torch.Tensor, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean colour of the covered pixels in the left and right thirds of a front view [H,W,3]."""
    w = rgb.shape[1]
    cov = mask[..., 0] > 0.99
    left, right = cov.clone(), cov.clone()
    left[:, w // 3:] = False
    right[:, : 2 * w // 3] = False
    return rgb[left].mean(0).numpy(), rgb[right].mean(0).numpy()


def test_reconstruction_target_renders_the_input_colours(tmp_path: Path) -> None:
    textured(tmp_path / "t.glb")
    inp = prepare_input(tmp_path / "t.glb")
    assert inp.colors is not None
    # The colour samples were normalised with the verts (largest half-extent 0.6 -> 0.8).
    assert np.abs(inp.colors.points).max() == pytest.approx(0.8, abs=1e-3)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_input(inp, run_dir)
    assert (run_dir / INPUT_COLORS).is_file() and (run_dir / INPUT_FILE).is_file()
    trimesh.creation.icosphere(subdivisions=1).export(tmp_path / "target.obj")
    cfg = load_config("tiny", ["guidance.kind=images", f"guidance.targets=[{tmp_path / 'target.obj'}]",
                               "mode=edit"])
    _, guide = build_guides(cfg, parse_prompts("input: a box\nball: a ball\n"), torch.device("cpu"), Progress(quiet=True),
                            run_dir)
    cams = orbit_cameras(cfg.camera, 1, elevation=0.0)  # azimuth 0: looking down -Z, world +X to the right
    bg = torch.full((1, 48, 48, 3), 0.5)
    t = guide.pinned.target(0, cams, 48, None, bg)  # no light: the render is the albedo itself
    left, right = front_halves(t.rgb[0], t.mask[0])
    np.testing.assert_allclose(left, RED, atol=0.05)
    np.testing.assert_allclose(right, GREEN, atol=0.05)
    # The same input without colours is reconstructed in one flat colour.
    plain = prepare_input(tmp_path / "target.obj")
    assert plain.colors is None
    flat = ImageTargetGuide([(plain.verts, plain.faces)]).target(0, cams, 48, None, bg)
    fl, fr = front_halves(flat.rgb[0], flat.mask[0])
    np.testing.assert_allclose(fl, fr, atol=1e-5)
