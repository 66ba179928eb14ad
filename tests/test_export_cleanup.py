"""Cleanup by area: planted debris goes, real parts stay, and the manifest report says what went."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import trimesh

from a3d_mesh.config import ExportConfig
from a3d_mesh.export import ExportError, clean_mesh, export_asset
from a3d_mesh.export.cleanup import MAX_LISTED, MIN_COMPONENT_AREA, face_areas

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_export", ROOT / "benchmarks" / "export.py")
bench_export = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_export)

Mesh = tuple[np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def chair() -> Mesh:
    """The toy chair as marching tets make it: one component, four thin legs fused to the seat."""
    return bench_export.toy_marching_mesh("chair", grid=64)


def area(m: Mesh) -> float:
    return float(face_areas(*m).sum())


def blob(target_area: float, centre: tuple[float, float, float], subdiv: int = 2) -> Mesh:
    """A closed icosphere of about ``target_area`` surface area at ``centre``."""
    s = trimesh.creation.icosphere(subdivisions=subdiv, radius=1.0)
    s.apply_scale(np.sqrt(target_area / s.area))
    s.apply_translation(centre)
    return np.asarray(s.vertices, np.float32), np.asarray(s.faces, np.int64)


def box(extents: tuple[float, float, float], centre: tuple[float, float, float]) -> Mesh:
    b = trimesh.creation.box(extents=extents)
    b.apply_translation(centre)
    return np.asarray(b.vertices, np.float32), np.asarray(b.faces, np.int64)


def combine(*meshes: Mesh) -> Mesh:
    vs, fs, n = [], [], 0
    for v, f in meshes:
        vs.append(v)
        fs.append(f + n)
        n += v.shape[0]
    return np.concatenate(vs), np.concatenate(fs)


def legs_kept(verts: np.ndarray) -> int:
    """How many of the chair's four leg columns (corners of the footprint, below the seat) have surface."""
    low = verts[verts[:, 1] < -0.3]
    return len({(bool(x > 0), bool(z > 0)) for x, z in low[:, [0, 2]] if abs(x) > 0.25 and abs(z) > 0.25})


def test_planted_debris_goes_legs_and_loose_part_stay(chair: Mesh) -> None:
    a = area(chair)
    # Debris like a toy run's floating blobs (0.1-2 % of the object's area), all far from it, and
    # a loose real part (a detached 11 x 11 x 60 cm leg, ~6 % of the chair) that must stay.
    debris = [blob(f * a, (2.0 + i, 0.0, 0.0)) for i, f in enumerate((0.001, 0.005, 0.01, 0.02))]
    leg = box((0.11, 0.6, 0.11), (0.0, 0.0, 2.5))
    assert area(leg) / a > 0.05
    v, f = combine(chair, *debris, leg)
    cv, cf, rep = clean_mesh(v, f)
    comp = rep["components"]
    assert comp["before"] == 6 and comp["after"] == 2 and comp["removed_count"] == 4
    assert comp["min_area_frac"] == MIN_COMPONENT_AREA
    # Largest removed first; each entry gives its faces and its area as a fraction of the chair.
    assert [r["faces"] for r in comp["removed"]] == [320] * 4
    np.testing.assert_allclose([r["area_frac"] for r in comp["removed"]], [0.02, 0.01, 0.005, 0.001], rtol=0.02)
    assert rep["steps"]["small_components"]["faces_removed"] == 4 * 320
    assert cf.shape[0] == chair[1].shape[0] + 12  # the whole chair and the loose leg
    assert cv[:, 0].max() < 1.0, "debris survived"
    assert legs_kept(cv) == 4


def test_area_decides_not_face_count(chair: Mesh) -> None:
    """A finely tessellated speck goes though it has many faces; a coarse large slab stays."""
    speck = blob(0.003 * area(chair), (3.0, 0.0, 0.0), subdiv=4)  # 5120 faces
    slab = box((1.0, 0.05, 0.5), (0.0, 0.0, 3.0))  # 12 faces, ~40 % of the chair's area
    cv, cf, rep = clean_mesh(*combine(chair, speck, slab))
    assert rep["components"]["removed"] == [{"faces": 5120, "area_frac": pytest.approx(0.003, rel=0.02)}]
    assert cf.shape[0] == chair[1].shape[0] + 12


def test_two_equal_parts_both_kept() -> None:
    v, f = combine(box((0.5, 0.5, 0.5), (-1.0, 0, 0)), box((0.5, 0.5, 0.5), (1.0, 0, 0)))
    cv, cf, rep = clean_mesh(v, f)
    assert rep["components"]["before"] == rep["components"]["after"] == 2
    assert rep["components"]["removed"] == [] and cf.shape[0] == 24


def test_fraction_is_configurable() -> None:
    big, small = box((1.0, 1.0, 1.0), (0, 0, 0)), box((0.5, 0.5, 0.5), (3.0, 0, 0))  # small: 25 % of big
    v, f = combine(big, small, blob(1e-4, (0, 3.0, 0)))
    assert clean_mesh(v, f, min_component_area=0.0)[2]["components"]["after"] == 3
    assert clean_mesh(v, f, min_component_area=0.2)[2]["components"]["after"] == 2
    _, cf, rep = clean_mesh(v, f, min_component_area=0.3)
    assert rep["components"]["after"] == 1 and cf.shape[0] == 12
    assert rep["components"]["removed"][0] == {"faces": 12, "area_frac": 0.25}


def test_report_lists_at_most_max_listed_but_counts_all() -> None:
    specks = [blob(1e-4 * (1 + i), (2.0 + 0.1 * i, 0, 0), subdiv=0) for i in range(MAX_LISTED + 5)]
    _, _, rep = clean_mesh(*combine(box((1.0, 1.0, 1.0), (0, 0, 0)), *specks))
    comp = rep["components"]
    assert comp["removed_count"] == MAX_LISTED + 5 and len(comp["removed"]) == MAX_LISTED
    fracs = [r["area_frac"] for r in comp["removed"]]
    assert fracs == sorted(fracs, reverse=True)


@pytest.mark.parametrize("frac", [-0.1, 1.5, float("nan")])
def test_bad_fraction_is_a_one_line_error(frac: float) -> None:
    with pytest.raises(ExportError, match="min_component_area must be in") as e:
        clean_mesh(*box((1.0, 1.0, 1.0), (0, 0, 0)), min_component_area=frac)
    assert "\n" not in str(e.value)


def test_config_default_matches_cleanup_default() -> None:
    assert ExportConfig().min_component_area == MIN_COMPONENT_AREA


def test_export_asset_passes_fraction_and_records_removed(tmp_path) -> None:
    v, f = combine(box((1.0, 1.0, 1.0), (0, 0, 0)), box((0.3, 0.3, 0.3), (2.0, 0, 0)))  # 9 % of the big box
    kept = export_asset("two", v, f, None, tmp_path, texture_size=32)
    assert kept["cleanup"]["components"]["after"] == 2 and kept["n_faces"] == 24
    dropped = export_asset("one", v, f, None, tmp_path, texture_size=32, min_component_area=0.1)
    assert dropped["cleanup"]["components"]["removed"] == [{"faces": 12, "area_frac": 0.09}]
    assert dropped["n_faces"] == 12
