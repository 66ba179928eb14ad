"""Template fitting, classification and relative yaw against procedural meshes at known poses."""

from __future__ import annotations

import pytest
import torch

from a3d_mesh.metrics.alignment import (classify, common_period, fit_template, pair_alignment, period_deg,
                                        relative_yaw_error)
from a3d_mesh.toy.shapes import FAMILIES, RANGES, SYMMETRY_ORDER, build, rotate_yaw, sample_object, template

POSES = {"chair": 37.0, "stool": 251.0, "table": 123.0, "bench": 300.0}


def yaw_gap(a: float, b: float, period: float) -> float:
    d = (a - b) % period
    return min(d, period - d)


@pytest.mark.parametrize("family", FAMILIES)
def test_rotated_scaled_translated_template_is_recovered(family: str) -> None:
    t = template(family)
    scale, shift = 0.43, torch.tensor([0.7, 0.39, -0.25])  # like a GLB in metres, ground near y = 0
    v = scale * rotate_yaw(t.verts, POSES[family]) + shift
    c = classify(v, t.faces)
    assert c.family == family and c.margin > 2.0
    fit = c.fits[family]
    assert fit.period_deg == 360.0 / SYMMETRY_ORDER[family]
    assert 0.0 <= fit.yaw_deg < fit.period_deg
    assert yaw_gap(fit.yaw_deg, POSES[family], fit.period_deg) <= 3.0
    assert fit.scale == pytest.approx(scale, rel=0.03)
    # The fitted pose puts the template back onto the mesh: every placed vertex lands near a mesh
    # vertex (nearest, not the same index: a symmetric family's yaw is reduced modulo its period).
    assert float(torch.cdist(fit.place(t.verts), v).amin(1).max()) < 0.1 * scale
    assert not fit.ambiguous


def test_sampled_family_members_classify_right() -> None:
    g = torch.Generator().manual_seed(7)
    for family in FAMILIES:
        obj = sample_object(family, g)
        yaw = float(torch.rand((), generator=g)) * 360.0
        c = classify(1.7 * rotate_yaw(obj.verts, yaw), obj.faces, n_points=400)  # a coarser search still separates them
        assert c.family == family, (family, c.distances)
        fit = c.fits[family]
        assert yaw_gap(fit.yaw_deg, yaw, fit.period_deg) <= 6.0


def test_symmetric_families_report_yaw_modulo_their_period() -> None:
    assert [period_deg(f) for f in FAMILIES] == [360.0, 120.0, 180.0, 360.0]
    t = template("table")
    a = fit_template(rotate_yaw(t.verts, 20.0), t.faces, "table")
    b = fit_template(rotate_yaw(t.verts, 200.0), t.faces, "table")  # the same object
    assert abs(a.yaw_deg - 20.0) <= 2.0 and abs(b.yaw_deg - 20.0) <= 2.0
    # The coarse curve covers the full circle and shows the symmetry: two equal dips 180 apart.
    curve = torch.tensor(a.curve)
    assert len(curve) == 72 and abs(int(curve.argmin()) - int(curve.roll(36).argmin())) == 36
    assert float(curve.view(2, 36).diff(dim=0).abs().max()) < 0.2 * float(curve.max() - curve.min())
    s = template("stool")
    fit = fit_template(rotate_yaw(s.verts, 100.0), s.faces, "stool")
    assert yaw_gap(fit.yaw_deg, 100.0 - 0.0, 120.0) <= 3.0 and fit.yaw_deg < 120.0
    with pytest.raises(ValueError):
        period_deg("sofa")


def test_near_ambiguity_is_reported_not_hidden() -> None:
    # A square table (width = depth) seen as a chair: without a back, the four quarter turns fit
    # about equally well; the fit says so.
    p = {k: (lo + hi) / 2 for k, (lo, hi) in RANGES["table"].items()}
    p["width"] = p["depth"] = 0.9
    fit = fit_template(*build("table", p), "chair")
    assert fit.ambiguous and fit.second_ratio < 1.1
    assert {round(a / 90) % 4 for a in fit.alternatives} | {round(fit.yaw_deg / 90) % 4} == {0, 1, 2, 3}
    # The chair's own template is clearly one-sided: its best other minimum is far worse.
    c = template("chair")
    clear = fit_template(c.verts, c.faces, "chair")
    assert not clear.ambiguous and clear.second_ratio > 1.5
    # A tighter tolerance can only remove alternatives.
    assert len(fit_template(*build("table", p), "chair", tol=0.0).alternatives) <= len(fit.alternatives)


def test_common_period_and_relative_yaw_error() -> None:
    assert common_period("chair", "bench") == 360.0
    assert common_period("chair", "table") == 180.0
    assert common_period("stool", "chair") == 120.0
    assert common_period("stool", "table") == 60.0
    assert relative_yaw_error(10.0, "chair", 350.0, "bench") == pytest.approx(20.0)
    assert relative_yaw_error(0.0, "chair", 180.0, "table") == pytest.approx(0.0)  # a table turned 180 is itself
    assert relative_yaw_error(0.0, "chair", 170.0, "table") == pytest.approx(10.0)
    assert relative_yaw_error(5.0, "stool", 100.0, "chair") == pytest.approx(25.0)  # 95 mod 120 -> 25 from 0
    assert relative_yaw_error(0.0, "stool", 100.0, "table") == pytest.approx(20.0)  # 100 mod 60 = 40 -> 20
    assert relative_yaw_error(0.0, "chair", 180.0, "chair") == pytest.approx(180.0)  # the worst case


@pytest.mark.parametrize("fa,ya,fb,yb", [("chair", 15.0, "bench", 95.0), ("chair", 200.0, "table", 30.0),
                                         ("stool", 40.0, "chair", 275.0)])
def test_relative_yaw_of_rotated_templates_is_the_known_difference(fa: str, ya: float, fb: str, yb: float) -> None:
    ta, tb = template(fa), template(fb)
    a = fit_template(rotate_yaw(ta.verts, ya), ta.faces, fa)
    b = fit_template(0.5 * rotate_yaw(tb.verts, yb) + 1.0, tb.faces, fb)
    truth = relative_yaw_error(ya, fa, yb, fb)
    pair = pair_alignment(a, b)
    assert pair["error_deg"] == pytest.approx(truth, abs=3.0)
    assert pair["period_deg"] == common_period(fa, fb) and pair["chance_deg"] == pair["period_deg"] / 4
    assert not pair["ambiguous"] and pair["error_min_deg"] == pair["error_deg"]
