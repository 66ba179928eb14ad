"""Known targets instead of a prior (``guidance: images``): the set's exported meshes match their
targets while sharing one model; a hybrid split along an axis takes each side from the right
source; an edit keeps object 0 on the input while the other corner moves to its target; bad
hybrid specs and input meshes are rejected cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from typer.testing import CliRunner

from a3d_mesh.run import TrainedSet
from a3d_mesh.config import load_config
from a3d_mesh.train.edit import EditInputError, prepare_input
from a3d_mesh.geometry import is_closed_oriented_manifold, mesh_sdf
from a3d_mesh.hybrid import code_field, parse_hybrid
from a3d_mesh.prompts import parse_prompts
from a3d_mesh.progress import Progress
from a3d_mesh.train.pipeline import edit, run
from a3d_mesh_cli.main import app

pytestmark = pytest.mark.slow  # end-to-end runs against known target meshes: not in the quick loop (-m 'not slow')

# Small but real: both stages, export and previews, on a CPU in about a minute.
SETTINGS = [
    "guidance.kind=images", "camera.elevation_range=[-40.0, 60.0]", "sampling.p_corner_i=0.5", "sampling.p_corner_j=0.5", "sampling.p_interior=0.0",
    "coarse.steps=150", "coarse.orientation_weight=[0.0, 0.0]", "coarse.lr_mlp=0.01",
    "refine.steps=300", "refine.resolution=64", "refine.tet_resolution=48", "refine.lr=0.03", "refine.normal_consistency_weight=0.01",
    "export.texture_size=128", "preview.resolution=64", "preview.views=2", "preview.sweep_frames=3",
    "checkpoint_every=1000",
]
GRID = torch.stack(torch.meshgrid(*(torch.linspace(-0.95, 0.95, 28),) * 3, indexing="ij"), -1).reshape(-1, 3)
SPHERE_R, BOX_HALF = 0.5, (0.55, 0.4, 0.4)


def sphere_inside(p: torch.Tensor) -> torch.Tensor:
    return p.norm(dim=-1) < SPHERE_R


def box_inside(p: torch.Tensor) -> torch.Tensor:
    return (p.abs() < torch.tensor(BOX_HALF)).all(-1)


def inside(v: torch.Tensor, f: torch.Tensor, p: torch.Tensor = GRID) -> torch.Tensor:
    return mesh_sdf(v.float(), f.long(), p) < 0


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("targets")
    trimesh.creation.icosphere(subdivisions=3, radius=SPHERE_R).export(d / "sphere.obj")
    trimesh.creation.box(extents=[2 * h for h in BOX_HALF]).export(d / "box.obj")
    trimesh.creation.icosphere(subdivisions=2, radius=0.5).export(d / "small_sphere.obj")
    return d


@pytest.fixture(scope="module")
def trained(targets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("known") / "run"
    cfg = load_config("tiny", SETTINGS + [f"guidance.targets=[{targets / 'sphere.obj'}, {targets / 'box.obj'}]"])
    # Two threads, whatever the machine: the result then does not depend on the core count.
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run(out, parse_prompts("ball: a ball\nbrick: a brick\n"), cfg, progress=Progress(quiet=True))
    finally:
        torch.set_num_threads(threads)
    return out


# The box is the hard case: its flat faces meet no silhouette, so only the depth term places them
# (issue 6: with a squared depth error it stayed ~0.06 too large on every side, IoU ~0.79; the L1
# depth term brings it to ~0.99).
@pytest.mark.slow
@pytest.mark.parametrize("k", [0, 1], ids=["ball", "box"])
def test_exported_meshes_match_their_targets(trained: Path, k: int) -> None:
    man = json.loads((trained / "manifest.json").read_text())
    assert [a["name"] for a in man["assets"][:2]] == ["ball", "brick"]
    # One frame for the set: the same scale and x/z; each asset grounded on its own base, and its
    # recorded offset takes it back to the set's shared height (export.ground = each).
    t0, t1 = (x["transform"] for x in man["assets"][:2])
    assert t0["scale"] == t1["scale"] and t0["translation"][::2] == t1["translation"][::2]
    set_y = [x["transform"]["translation"][1] - x["ground_offset_m"] for x in man["assets"][:2]]
    assert set_y[0] == pytest.approx(set_y[1], abs=1e-6)
    a, truth = man["assets"][k], (sphere_inside, box_inside)[k]
    m = trimesh.load(trained / "export" / a["files"]["glb"], force="mesh")
    tr = a["transform"]
    v = (np.asarray(m.vertices) - np.array(tr["translation"])) / tr["scale"]  # back to the set's frame
    score = iou(inside(torch.tensor(v), torch.tensor(np.asarray(m.faces))), truth(GRID))
    assert score >= 0.8, f"{a['name']}: IoU {score:.3f} with its target"


@pytest.mark.slow
def test_hybrid_split_takes_each_side_from_its_source(trained: Path) -> None:
    ts = TrainedSet.load(trained)
    spec = parse_hybrid("mix=ball@x>0,brick", ts.prompts.names, blend=0.1)
    v, f = ts.mesh(code_field(spec, ts.n))
    assert is_closed_oriented_manifold(f, v.shape[0])
    hyb = inside(v, f)
    ball, brick = inside(*ts.mesh(ts.code(0))), inside(*ts.mesh(ts.code(1)))
    right, left = GRID[:, 0] > 0.15, GRID[:, 0] < -0.15  # away from the blend zone
    assert (hyb[right] == ball[right]).float().mean() >= 0.95
    assert (hyb[left] == brick[left]).float().mean() >= 0.95
    # The CLI adds it to the run's export and manifest without retraining.
    res = CliRunner().invoke(app, ["hybrid", str(trained), "--hybrid", "mix=ball@x>0,brick", "-q"])
    assert res.exit_code == 0, res.output
    man = json.loads((trained / "manifest.json").read_text())
    rec = {a["name"]: a for a in man["assets"]}["mix"]
    assert rec["kind"] == "hybrid" and rec["hybrid"]["spec"] == "mix=ball@x>0,brick"
    assert (trained / "export" / rec["files"]["glb"]).is_file() and (trained / "previews" / "mix.png").is_file()
    assert {"ball", "brick"} <= {a["name"] for a in man["assets"]}  # the set itself is kept


@pytest.mark.slow
def test_edit_keeps_the_input_and_moves_the_other_corner(targets: Path, tmp_path: Path) -> None:
    cfg = load_config("tiny", SETTINGS + ["refine.steps=60", "refine.tet_resolution=32", "refine.lr=0.005",
                                           f"guidance.targets=[{targets / 'box.obj'}]"])
    out = tmp_path / "edit"
    edit(out, targets / "small_sphere.obj", parse_prompts("brick: a brick\n"), cfg, progress=Progress(quiet=True))
    ts = TrainedSet.load(out)
    inp = trimesh.load(out / "input.ply", process=False)
    v0, f0 = ts.mesh(ts.code(0))
    # Chamfer distance of object 0 to the (normalised) input, in scene units (the cube is 2 wide).
    surface = trimesh.sample.sample_surface_even(inp, 4000, seed=0)[0]  # the input's surface, not its sparse vertices
    d = torch.cdist(v0, torch.tensor(np.asarray(surface), dtype=torch.float32))
    chamfer = float(d.min(1).values.mean() + d.min(0).values.mean())
    assert chamfer < 0.08, chamfer
    # The input (radius 0.5 normalised to 0.8) is scaled; the box target is used as given.
    box = box_inside(GRID)
    start = iou(inside(torch.tensor(np.asarray(inp.vertices), dtype=torch.float32),
                       torch.tensor(np.asarray(inp.faces))), box)
    moved = iou(inside(*ts.mesh(ts.code(1))), box)
    assert moved > start + 0.3, (start, moved)
    man = json.loads((out / "manifest.json").read_text())
    assert man["edit"]["input_frame"]["scale"] == pytest.approx(0.5 / 0.8, rel=1e-3)


def test_bad_hybrid_spec_fails_before_training(tmp_path: Path) -> None:
    p = tmp_path / "p.txt"
    p.write_text("dog: a dog\ncat: a cat\n")
    res = CliRunner().invoke(app, ["run", str(p), "--preset", "tiny", "--out", str(tmp_path / "r"),
                                   "--hybrid", "mix=dog@q>0,cat"])
    assert res.exit_code == 2 and res.output.startswith("a3d-mesh: error:") and "q>0" in res.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name, content, message", [
    ("garbage.obj", b"this is not a mesh\n\x00\x01", "cannot read mesh|has no triangles"),
    ("empty.ply", b"", "cannot read mesh|has no triangles"),
    ("model.stl", b"solid x\nendsolid x\n", "unsupported input mesh format"),
])
def test_bad_input_meshes_are_rejected(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(EditInputError, match=message):
        prepare_input(f)
    prompts = tmp_path / "t.txt"
    prompts.write_text("a brick\n")
    res = CliRunner().invoke(app, ["edit", str(f), str(prompts), "--preset", "tiny", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and res.output.startswith("a3d-mesh: error:")
    assert not (tmp_path / "r").exists()


def test_huge_and_soup_inputs(tmp_path: Path) -> None:
    mesh = trimesh.creation.icosphere(subdivisions=1)
    f = tmp_path / "s.obj"
    mesh.export(f)
    with pytest.raises(EditInputError, match="decimate it below 10"):
        prepare_input(f, max_faces=10)
    soup = trimesh.Trimesh(np.asarray(mesh.vertices), np.concatenate([mesh.faces, mesh.faces[:5]]), process=False)
    g = tmp_path / "soup.obj"
    soup.export(g)
    inp = prepare_input(g)
    assert inp.repairs["steps"]["duplicate_faces"]["faces_removed"] == 5 and inp.faces.shape[0] == len(mesh.faces)
    assert float(inp.verts.abs().max()) == pytest.approx(0.8, rel=1e-4)
