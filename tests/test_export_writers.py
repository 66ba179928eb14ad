"""Writers: GLB (Khronos validator, trimesh round trip), OBJ+MTL+PNG, USDZ, FBX via Blender."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from a3d_mesh.export import ExportError, build_glb, texture_png_bytes, unwrap, vertex_normals, write_fbx
from a3d_mesh.export import write_glb, write_obj, write_usdz

REPO = Path(__file__).resolve().parents[1]
VALIDATOR_JS = REPO / "tests" / "gltf_validate.js"
INSTALL_HINT = "install it with: npm install --no-save --prefix . gltf-validator (needs node)"


def run_gltf_validator(path: Path) -> dict:
    """The Khronos validator's JSON report for ``path``; fails under CI, skips locally, if absent."""
    node = shutil.which("node")
    if node is None or not (REPO / "node_modules" / "gltf-validator").is_dir():
        msg = f"Khronos gltf-validator not available; {INSTALL_HINT}"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    proc = subprocess.run([node, str(VALIDATOR_JS), str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def assert_valid_glb(path: Path) -> dict:
    report = run_gltf_validator(path)
    issues = report["issues"]
    assert issues["numErrors"] == 0, json.dumps(issues["messages"], indent=1)
    return report


@pytest.fixture(scope="module")
def asset() -> dict:
    """A unwrapped sphere in metres with a gradient texture (top row red, bottom row blue)."""
    m = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    res = unwrap(m.vertices, m.faces, timeout_s=60, texture_size=64)
    ramp = np.linspace(0.0, 1.0, 64, dtype=np.float32)[:, None].repeat(64, 1)
    tex = np.stack([1 - ramp, np.full_like(ramp, 0.5), ramp], -1)
    return {
        "verts": res.verts + np.float32([0, 0.5, 0]),
        "faces": res.faces,
        "uv": res.uv,
        "normals": vertex_normals(res.source_verts, res.source_faces)[res.vmapping],
        "png": texture_png_bytes(tex),
        "tex8": np.round(tex * 255).astype(np.uint8),
    }


def mesh_args(a: dict) -> tuple:
    return a["verts"], a["faces"], a["uv"], a["normals"], a["png"]


def test_glb_passes_khronos_validator(tmp_path, asset) -> None:
    path = write_glb(tmp_path / "ball.glb", *mesh_args(asset), name="ball", extras={"k": 1})
    report = assert_valid_glb(path)
    assert report["issues"]["numWarnings"] == 0
    info = report["info"]
    assert info["totalVertexCount"] == asset["verts"].shape[0]
    assert info["totalTriangleCount"] == asset["faces"].shape[0]
    assert info["resources"][0]["storage"] == "glb"  # self-contained, no external reference


def test_glb_round_trip_through_trimesh(tmp_path, asset) -> None:
    path = write_glb(tmp_path / "ball.glb", *mesh_args(asset), name="ball")
    geom = list(trimesh.load(path, process=False).geometry.values())
    assert len(geom) == 1
    g = geom[0]
    assert g.vertices.shape[0] == asset["verts"].shape[0]
    np.testing.assert_allclose(g.vertices, asset["verts"], atol=1e-6)
    np.testing.assert_array_equal(g.faces, asset["faces"])
    # trimesh converts glTF's top-left texture origin back to v up: our UVs must come back as is.
    np.testing.assert_allclose(g.visual.uv, asset["uv"], atol=1e-6)
    np.testing.assert_array_equal(np.asarray(g.visual.material.baseColorTexture.convert("RGB")), asset["tex8"])
    assert g.visual.material.metallicFactor == 0.0
    np.testing.assert_allclose(g.vertex_normals, asset["normals"], atol=1e-5)


def test_build_glb_header_and_alignment(asset) -> None:
    data = build_glb(*mesh_args(asset))
    magic, version, length = np.frombuffer(data[:12], "<u4")
    assert (magic, version, length) == (0x46546C67, 2, len(data)) and len(data) % 4 == 0
    doc = json.loads(data[20 : 20 + int(np.frombuffer(data[12:16], "<u4")[0])])
    assert all(v["byteOffset"] % 4 == 0 for v in doc["bufferViews"])
    assert doc["accessors"][3]["componentType"] == 5125  # uint32 indices


def test_obj_round_trip_through_trimesh(tmp_path, asset) -> None:
    parts = write_obj(tmp_path / "ball", "ball", *mesh_args(asset))
    assert sorted(p.name for p in (tmp_path / "ball").iterdir()) == ["ball.mtl", "ball.obj", "ball.png"]
    assert "map_Kd ball.png" in parts["mtl"].read_text()
    m = trimesh.load(parts["obj"], process=False)
    assert m.vertices.shape[0] == asset["verts"].shape[0]
    np.testing.assert_allclose(m.vertices, asset["verts"], atol=1e-5)
    np.testing.assert_allclose(m.visual.uv, asset["uv"], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(m.visual.material.image.convert("RGB")), asset["tex8"])


def test_usdz_reads_back_with_usd(tmp_path, asset) -> None:
    pytest.importorskip("pxr", reason="usd-core is the optional 'usd' extra")
    from pxr import Usd, UsdGeom

    path = write_usdz(tmp_path / "ball.usdz", *mesh_args(asset), name="ball")
    stage = Usd.Stage.Open(str(path))
    assert UsdGeom.GetStageUpAxis(stage) == "Y" and UsdGeom.GetStageMetersPerUnit(stage) == 1.0
    mesh = UsdGeom.Mesh(stage.GetPrimAtPath("/ball/mesh"))
    np.testing.assert_allclose(np.asarray(mesh.GetPointsAttr().Get()), asset["verts"], atol=1e-6)
    st = UsdGeom.PrimvarsAPI(mesh).GetPrimvar("st").Get()
    np.testing.assert_allclose(np.asarray(st), asset["uv"], atol=1e-6)
    assert len(mesh.GetFaceVertexIndicesAttr().Get()) == asset["faces"].size


def test_usdz_without_usd_core_is_a_clear_error(tmp_path, asset, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pxr", None)  # makes `from pxr import ...` raise ImportError
    with pytest.raises(ExportError, match="usd-core"):
        write_usdz(tmp_path / "ball.usdz", *mesh_args(asset))
    assert list(tmp_path.iterdir()) == []


def test_fbx_without_blender_is_a_clear_error(tmp_path, asset, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ExportError, match="Blender"):
        write_fbx(tmp_path / "ball.fbx", build_glb(*mesh_args(asset)))
    assert list(tmp_path.iterdir()) == []


def fake_blender(bin_dir: Path, body: str) -> None:
    """A ``blender`` on PATH that runs ``body`` with ``src, dst`` = the two args after ``--``."""
    bin_dir.mkdir()
    exe = bin_dir / "blender"
    exe.write_text(f"#!{sys.executable}\nimport sys\nsrc, dst = sys.argv[sys.argv.index('--') + 1:]\n{body}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)


def test_fbx_runs_blender_and_writes_atomically(tmp_path, asset, monkeypatch) -> None:
    # The fake Blender copies its input: checks the command protocol and the atomic move, not FBX.
    fake_blender(tmp_path / "bin", "open(dst, 'wb').write(open(src, 'rb').read())")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    glb = build_glb(*mesh_args(asset))
    path = write_fbx(tmp_path / "out" / "ball.fbx", glb)
    assert path.read_bytes() == glb
    assert [p.name for p in path.parent.iterdir()] == ["ball.fbx"]


def test_fbx_blender_failure_leaves_no_file(tmp_path, asset, monkeypatch) -> None:
    fake_blender(tmp_path / "bin", "open(dst, 'wb').write(b'partial'); sys.exit('Error: import failed')")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(ExportError, match="import failed"):
        write_fbx(tmp_path / "out" / "ball.fbx", build_glb(*mesh_args(asset)))
    assert list((tmp_path / "out").iterdir()) == []


def test_texture_png_is_top_row_first() -> None:
    tex = np.zeros((4, 2, 3), np.float32)
    tex[0] = 1.0
    img = np.asarray(Image.open(io.BytesIO(texture_png_bytes(tex))))
    assert img[0].min() == 255 and img[1:].max() == 0


def test_validator_harness_reports_a_broken_glb(tmp_path, asset) -> None:
    # Guards the harness itself: a GLB whose index accessor overruns its buffer view must fail.
    data = bytearray(build_glb(*mesh_args(asset)))
    n_json = int(np.frombuffer(bytes(data[12:16]), "<u4")[0])
    doc = json.loads(bytes(data[20 : 20 + n_json]))
    doc["accessors"][3]["count"] += 3
    js = json.dumps(doc, separators=(",", ":")).encode()
    js += b" " * (n_json - len(js))
    assert len(js) == n_json
    data[20 : 20 + n_json] = js
    (tmp_path / "bad.glb").write_bytes(bytes(data))
    assert run_gltf_validator(tmp_path / "bad.glb")["issues"]["numErrors"] > 0
