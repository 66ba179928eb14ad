"""Normal maps: tangent frames, baking from the high-resolution mesh, and their place in the files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import trimesh

from a3d_mesh.export import bake_normal_map, decimate, export_asset, unwrap, vertex_normals, vertex_tangents
from test_export_asset import sample_bilinear
from test_export_writers import assert_valid_glb


@pytest.fixture(scope="module")
def low_and_high():
    """A fine sphere (radius 0.5) and a 200-face decimation of it, unwrapped."""
    high = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    hv, hf = np.asarray(high.vertices, np.float32), np.asarray(high.faces, np.int64)
    lv, lf = decimate(hv, hf, 200)
    res = unwrap(lv, lf, timeout_s=60, texture_size=128)
    normals = vertex_normals(res.source_verts, res.source_faces)[res.vmapping]
    return res, normals, hv, hf


def test_vertex_tangents_form_a_frame_along_u(low_and_high) -> None:
    res, normals, _, _ = low_and_high
    tan = vertex_tangents(res.verts, res.faces, res.uv, normals)
    assert tan.shape == (res.verts.shape[0], 4) and set(np.unique(tan[:, 3])) <= {-1.0, 1.0}
    np.testing.assert_allclose(np.linalg.norm(tan[:, :3], axis=1), 1.0, atol=1e-5)
    assert np.abs((tan[:, :3] * normals).sum(1)).max() < 1e-5
    # Along each face's u gradient: moving in +u moves along the face's (mean) tangent.
    f = res.faces
    p, uv = res.verts[f].astype(np.float64), res.uv[f].astype(np.float64)
    d1, d2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    dpdu = ((p[:, 1] - p[:, 0]) * d2[:, 1:] - (p[:, 2] - p[:, 0]) * d1[:, 1:]) / det[:, None]
    assert np.mean((tan[f, :3].mean(1) * dpdu).sum(1) > 0) > 0.95


def test_baked_normal_map_restores_the_smooth_surface(low_and_high) -> None:
    res, normals, hv, hf = low_and_high
    tan = vertex_tangents(res.verts, res.faces, res.uv, normals)
    nmap = bake_normal_map(res.verts, res.faces, res.uv, normals, tan, hv, hf, texture_size=128)
    assert nmap.shape == (128, 128, 3) and nmap.min() >= 0 and nmap.max() <= 1
    # Decode at points inside faces the way a glTF renderer does, compare with the true sphere normal.
    bary = np.array([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6]])
    f = res.faces
    pts = np.einsum("kc,fcd->fkd", bary, res.verts[f]).reshape(-1, 3)
    uv = np.einsum("kc,fcd->fkd", bary, res.uv[f]).reshape(-1, 2)
    n = np.einsum("kc,fcd->fkd", bary, normals[f]).reshape(-1, 3)
    t = np.einsum("kc,fcd->fkd", bary, tan[f, :3]).reshape(-1, 3)
    w = np.repeat(tan[f[:, 0], 3], 3)[:, None]
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    t -= n * (n * t).sum(1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    b = w * np.cross(n, t)
    c = sample_bilinear(nmap, uv) * 2 - 1
    world = c[:, :1] * t + c[:, 1:2] * b + c[:, 2:3] * n
    world /= np.linalg.norm(world, axis=1, keepdims=True)
    truth = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    ang_map = np.degrees(np.arccos(np.clip((world * truth).sum(1), -1, 1)))
    ang_low = np.degrees(np.arccos(np.clip((n * truth).sum(1), -1, 1)))
    assert np.median(ang_map) < 0.5 and np.median(ang_map) < 0.3 * np.median(ang_low), (
        np.median(ang_map), np.median(ang_low))


def test_export_asset_with_normal_map(tmp_path) -> None:
    high = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    rec = export_asset("ball", torch.tensor(high.vertices, dtype=torch.float32), torch.tensor(high.faces), None,
                       tmp_path, formats=("glb", "obj", "usdz"), texture_size=64, target_faces=300, normal_map=True)
    assert rec["normal_map"] and rec["n_faces"] <= 300
    report = assert_valid_glb(tmp_path / "ball.glb")
    assert report["issues"]["numWarnings"] == 0
    data = (tmp_path / "ball.glb").read_bytes()
    doc = json.loads(data[20 : 20 + int(np.frombuffer(data[12:16], "<u4")[0])])
    assert doc["materials"][0]["normalTexture"]["index"] == 1
    assert "TANGENT" in doc["meshes"][0]["primitives"][0]["attributes"]
    assert "map_Bump ball_normal.png" in (tmp_path / "ball" / "ball.mtl").read_text()
    assert "ball/ball_normal.png" in rec["sha256"]
