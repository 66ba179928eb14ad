"""Export foundations: set transform, atomic writes, mesh cleanup, UV atlas and its crash paths."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import trimesh

from a3d_mesh.export import ExportError, SetTransform, clean_mesh, set_transform, unwrap
from a3d_mesh.export import uv as uv_mod
from a3d_mesh.atomic import atomic_path, atomic_write_bytes
from a3d_mesh.export.uv import atlas_utilisation, default_padding, per_triangle_atlas, texels_per_unit
from test_export_cleanup import bench_export


def sphere(subdiv: int = 2) -> tuple[np.ndarray, np.ndarray]:
    m = trimesh.creation.icosphere(subdivisions=subdiv, radius=0.5)
    return np.asarray(m.vertices, np.float32), np.asarray(m.faces, np.int64)


# ---------------------------------------------------------------- set transform
def test_set_transform_shares_scale_ground_and_axis() -> None:
    a = np.array([[0.3, -0.5, 0.1], [0.5, 0.3, -0.2], [0.0, 0.0, 0.0]])
    b = np.array([[-0.4, -0.4, 0.0], [-0.2, 0.6, 0.3]])
    t = set_transform([a, b, np.zeros((0, 3))], height_m=2.0)
    scale = 2.0 / 1.1  # union spans y in [-0.5, 0.6]
    assert t.scale == pytest.approx(scale)
    ta, tb = t.apply(a), t.apply(b)
    assert min(ta[:, 1].min(), tb[:, 1].min()) == pytest.approx(0.0, abs=1e-6)
    assert max(ta[:, 1].max(), tb[:, 1].max()) == pytest.approx(2.0, abs=1e-5)
    # b's lowest point is above a's: it keeps its gap instead of being dropped to the floor.
    assert tb[:, 1].min() == pytest.approx(0.1 * scale, abs=1e-5)
    # The shared vertical axis x = z = 0 stays put (no per-object bbox centring).
    np.testing.assert_allclose(ta[2, [0, 2]], 0.0, atol=1e-7)
    np.testing.assert_allclose(ta[0] - tb[0], scale * (a[0] - b[0]), atol=1e-5)
    assert SetTransform.from_dict(t.to_dict()) == t


@pytest.mark.parametrize("arrays", [[np.zeros((0, 3))], [np.array([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])]])
def test_set_transform_rejects_empty_or_flat_sets(arrays: list[np.ndarray]) -> None:
    with pytest.raises(ExportError):
        set_transform(arrays)


# ---------------------------------------------------------------- atomic writes
def test_atomic_write_replaces_and_failure_keeps_old_file(tmp_path) -> None:
    dest = tmp_path / "a.bin"
    atomic_write_bytes(dest, b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_bytes(b"half-writ")
            raise RuntimeError("writer crashed")
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]  # no temp file left behind
    atomic_write_bytes(dest, b"new")
    assert dest.read_bytes() == b"new"


def test_atomic_path_rejects_writer_that_wrote_nothing(tmp_path) -> None:
    with pytest.raises(OSError):
        with atomic_path(tmp_path / "x.glb"):
            pass
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- cleanup
def dirty_sphere() -> tuple[np.ndarray, np.ndarray]:
    """A sphere plus far debris, a repeated-index face, a zero-area face and a non-manifold fin.

    The zero-area face uses exactly representable collinear points: MeshLab's null-face test is
    an exact zero-area test.
    """
    v, f = sphere(3)
    a, b = f[0, 0], f[0, 1]
    n = v.shape[0]
    debris = np.array([[3, 3, 3], [3.01, 3, 3], [3, 3.01, 3], [3, 3, 3.01]], np.float32)
    line = [[2.0, 0, 0], [2.5, 0, 0], [3.0, 0, 0]]
    extra_v = np.concatenate([debris, line, [v[a] * 1.5], [v[5]]]).astype(np.float32)
    fin, dup = n + 7, n + 8
    extra_f = np.array([
        [n, n + 2, n + 1], [n, n + 1, n + 3], [n, n + 3, n + 2], [n + 1, n + 2, n + 3],  # debris
        [a, a, b],  # repeated index
        [n + 4, n + 5, n + 6],  # zero area (collinear)
        [b, a, fin],  # third face on edge a-b: non-manifold fin
    ])
    f2 = f.copy()
    f2[f2 == 5] = dup  # one vertex duplicated at the same position: must be welded back
    return np.concatenate([v, extra_v]), np.concatenate([f2, extra_f])


def test_clean_mesh_repairs_and_reports() -> None:
    v, f = dirty_sphere()
    cv, cf, rep = clean_mesh(v, f)
    steps = rep["steps"]
    assert steps["repeated_index_faces"]["faces_removed"] == 1
    assert steps["merge_close_vertices"]["vertices_removed"] >= 1
    assert steps["null_faces"]["faces_removed"] == 1
    assert steps["small_components"]["faces_removed"] == 4
    assert steps["non_manifold_edges"]["faces_removed"] >= 1
    assert rep["input"] == {"vertices": v.shape[0], "faces": f.shape[0]}
    assert rep["output"] == {"vertices": cv.shape[0], "faces": cf.shape[0]}
    m = trimesh.Trimesh(cv, cf, process=False)
    edges, counts = np.unique(np.sort(m.edges, axis=1), axis=0, return_counts=True)
    assert counts.max() <= 2, "a non-manifold edge survived"
    assert cv[:, 0].max() < 1.0, "debris survived"
    assert cf.shape[0] >= 1270  # the sphere itself (1280 faces) is essentially kept
    assert cv.dtype == np.float32 and cf.dtype == np.int64


def test_clean_mesh_decimates_to_budget() -> None:
    v, f = sphere(3)
    cv, cf, rep = clean_mesh(v, f, target_faces=300)
    assert cf.shape[0] <= 300 and rep["decimated"]["from_faces"] == 1280
    assert trimesh.Trimesh(cv, cf).is_watertight


@pytest.mark.parametrize(
    "verts, faces",
    [(np.zeros((0, 3)), np.zeros((0, 3), int)), (np.zeros((3, 3)), np.array([[0, 1, 3]])),
     (np.full((3, 3), np.nan), np.array([[0, 1, 2]])), (np.eye(3), np.array([[0, 0, 1]]))],
)
def test_clean_mesh_rejects_unusable_meshes(verts: np.ndarray, faces: np.ndarray) -> None:
    with pytest.raises(ExportError):
        clean_mesh(verts, faces)


# ---------------------------------------------------------------- UV atlas
def check_uv_result(res: uv_mod.UVResult, n_faces: int) -> None:
    assert res.faces.shape == (n_faces, 3)
    assert res.uv.shape == (res.verts.shape[0], 2) and res.uv.min() >= 0 and res.uv.max() <= 1
    np.testing.assert_array_equal(res.verts, res.source_verts[res.vmapping])
    # Each face keeps its 3D corners: the split mesh is the source mesh, face for face.
    np.testing.assert_array_equal(res.vmapping[res.faces], res.source_faces)


def test_unwrap_with_xatlas() -> None:
    v, f = sphere(2)
    res = unwrap(v, f, timeout_s=60)
    assert res.method == "xatlas" and res.attempts == []
    check_uv_result(res, f.shape[0])
    assert res.verts.shape[0] > v.shape[0]  # a closed sphere needs seams


def kill_self_command(job, result) -> list[str]:
    return [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]


def test_unwrap_survives_killed_child_and_falls_back_to_per_triangle(monkeypatch) -> None:
    monkeypatch.setattr(uv_mod, "child_command", kill_self_command)
    v, f = sphere(2)
    res = unwrap(v, f, timeout_s=60)
    assert res.method == "per-triangle"
    assert len(res.attempts) == 2 and all("-9" in a for a in res.attempts)
    check_uv_result(res, f.shape[0])


def test_unwrap_retries_decimated_after_one_crash(monkeypatch) -> None:
    calls: list[int] = []
    real = uv_mod.child_command

    def crash_once(job, result):
        calls.append(1)
        return kill_self_command(job, result) if len(calls) == 1 else real(job, result)

    monkeypatch.setattr(uv_mod, "child_command", crash_once)
    v, f = sphere(3)
    # target 0: the first chart settings always do, so each attempt is exactly one child.
    res = unwrap(v, f, timeout_s=60, retry_faces=400, target=0.0)
    assert res.method == "xatlas-decimated" and len(calls) == 2
    assert res.faces.shape[0] <= 400
    check_uv_result(res, res.source_faces.shape[0])


@pytest.mark.parametrize(
    "code, why", [("import time; time.sleep(30)", "timed out"), ("pass", "no readable result")]
)
def test_unwrap_survives_hanging_or_silent_child(monkeypatch, code: str, why: str) -> None:
    monkeypatch.setattr(uv_mod, "child_command", lambda job, result: [sys.executable, "-c", code])
    v, f = sphere(1)
    res = unwrap(v, f, timeout_s=1.0)
    assert res.method == "per-triangle" and why in res.attempts[0]


def test_per_triangle_atlas_cells_do_not_overlap() -> None:
    faces = np.arange(3 * 7).reshape(7, 3)
    vm, fo, uv = per_triangle_atlas(faces, resolution=64, padding=2)
    np.testing.assert_array_equal(vm[fo], faces)
    grid, s = 2, 0.5  # 7 faces -> 4 cells -> 2 x 2 grid
    tri = uv[fo]  # [F,3,2]
    cells = np.floor(tri.mean(1) / s).astype(int)
    assert np.all(np.floor(tri / s).astype(int) == cells[:, None, :]), "a triangle leaves its cell"
    local = (tri - cells[:, None, :] * s).sum(-1)  # u + v inside the cell
    for c in range(4):
        pair = np.flatnonzero(cells[:, 0] + grid * cells[:, 1] == c)
        if len(pair) == 2:
            assert local[pair[0]].max() < local[pair[1]].min()  # separated by the diagonal gap
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    assert area.min() > 0


# ---------------------------------------------------------------- atlas utilisation
def test_atlas_utilisation_and_density_of_a_known_layout() -> None:
    """Two triangles filling the lower-left quarter: 25 % of the texels, and a 2 x 2 m quad
    mapped onto half the texture's side gets resolution / 4 texels per metre."""
    uv = np.array([[0, 0], [0.5, 0], [0.5, 0.5], [0, 0.5]], np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    assert atlas_utilisation(uv, faces, 64) == pytest.approx(0.25)
    quad = np.array([[0, 0, 0], [2, 0, 0], [2, 2, 0], [0, 2, 0]], np.float32)
    assert texels_per_unit(quad, faces, uv, 1024) == pytest.approx(256.0)


def test_padding_scales_with_resolution() -> None:
    assert [default_padding(s) for s in (64, 256, 1024, 2048, 4096)] == [1, 1, 2, 4, 8]


def test_unwrap_covers_most_texels_of_a_marching_tets_mesh() -> None:
    """The toy chair re-meshed by marching tets on the toy preset's grid, at the default texture
    size: the atlas covers >= 60 % of the texels (67 %; it was 52 % with a bilinear ring, 4-texel
    padding and no brute-force packing)."""
    v, f = bench_export.toy_marching_mesh("chair", grid=40)
    res = unwrap(v, f, timeout_s=60)
    assert res.method == "xatlas"
    check_uv_result(res, f.shape[0])
    assert atlas_utilisation(res.uv, res.faces, 1024) >= 0.6


def cell_atlas(n: int) -> np.ndarray:
    """``[3n, 2]`` UVs: every face in its own cell of a grid over the whole square."""
    grid = int(np.ceil(np.sqrt(n)))
    corner = np.stack([np.arange(n) % grid, np.arange(n) // grid], 1) / grid
    tri = np.array([[0.05, 0.05], [0.9, 0.05], [0.05, 0.9]]) / grid
    return (corner[:, None, :] + tri[None]).reshape(-1, 2).astype(np.float32)


def test_unwrap_keeps_the_candidate_atlas_the_bake_fills_most(monkeypatch) -> None:
    """The child returns one atlas per chart setting; the parent keeps the one covering the most
    texels by the bake's rasteriser, and skips a malformed one instead of failing the asset."""
    v, f = sphere(1)
    n = f.shape[0]
    # Candidate 0: every face in its own cell of a grid over the whole square (large);
    # candidate 1: the same layout shrunk into a corner (a quarter of the side: 1/16 of the texels);
    # candidate 2: out-of-range indices.
    uv_big = cell_atlas(n)
    vm = f.reshape(-1).astype(np.uint32)
    faces = np.arange(3 * n, dtype=np.uint32).reshape(n, 3)
    code = (
        "import sys, numpy as np\n"
        f"uv = np.frombuffer(bytes.fromhex('{uv_big.tobytes().hex()}'), np.float32).reshape(-1, 2)\n"
        f"vm = np.frombuffer(bytes.fromhex('{vm.tobytes().hex()}'), np.uint32)\n"
        f"fo = np.arange({3 * n}, dtype=np.uint32).reshape({n}, 3)\n"
        "bad = fo.copy(); bad[0, 0] = 10 ** 6\n"
        "np.savez(sys.argv[2], count=np.int64(3), vmapping_0=vm, faces_0=fo, uv_0=uv * 0.25,\n"
        "         vmapping_1=vm, faces_1=fo, uv_1=uv, vmapping_2=vm, faces_2=bad, uv_2=uv)\n"
    )
    monkeypatch.setattr(uv_mod, "child_command", lambda job, result: [sys.executable, "-c", code, str(job), str(result)])
    res = unwrap(v, f, timeout_s=60, texture_size=256)
    assert res.method == "xatlas" and res.attempts == []
    np.testing.assert_allclose(res.uv, uv_big, atol=1e-6)
    np.testing.assert_array_equal(res.faces, faces)


def _fake_child(uv_small: np.ndarray, uv_big: np.ndarray, vm: np.ndarray, n: int, fail_second: bool = False) -> str:
    """A child that answers the first batch of chart settings (it starts with xatlas' default
    weights, NaN) with the small atlas and the other batch with the big one (or dies, with
    ``fail_second``)."""
    return (
        "import sys, numpy as np\n"
        "job = np.load(sys.argv[1])\n"
        "first = bool(np.isnan(job['charts'][0, 1]))\n"
        f"if not first and {fail_second}: sys.exit(3)\n"
        f"uv = np.frombuffer(bytes.fromhex('{uv_small.tobytes().hex()}' if first else '{uv_big.tobytes().hex()}'),"
        " np.float32).reshape(-1, 2)\n"
        f"vm = np.frombuffer(bytes.fromhex('{vm.tobytes().hex()}'), np.uint32)\n"
        f"fo = np.arange({3 * n}, dtype=np.uint32).reshape({n}, 3)\n"
        "np.savez(sys.argv[2], count=np.int64(1), vmapping_0=vm, faces_0=fo, uv_0=uv)\n"
    )


@pytest.mark.parametrize("target, fail_second, calls_expected, big", [
    (0.0, False, 1, False),   # the first settings fill enough: the slow ones are never run
    (1.0, False, 2, True),    # below the target: the rest are tried and the better atlas kept
    (1.0, True, 2, False),    # the extra child dies: the first atlas stays, no fallback
])
def test_extra_chart_settings_run_only_below_the_target(monkeypatch, target: float, fail_second: bool,
                                                        calls_expected: int, big: bool) -> None:
    v, f = sphere(1)
    n = f.shape[0]
    uv_big = cell_atlas(n)
    uv_small = uv_big * 0.5
    code = _fake_child(uv_small, uv_big, f.reshape(-1).astype(np.uint32), n, fail_second)
    calls: list[int] = []

    def command(job, result):
        calls.append(1)
        return [sys.executable, "-c", code, str(job), str(result)]

    monkeypatch.setattr(uv_mod, "child_command", command)
    res = unwrap(v, f, timeout_s=60, texture_size=256, target=target)
    assert res.method == "xatlas" and res.attempts == [] and len(calls) == calls_expected
    np.testing.assert_allclose(res.uv, uv_big if big else uv_small, atol=1e-6)
    assert res.utilisation == pytest.approx(atlas_utilisation(res.uv, res.faces, 256))
