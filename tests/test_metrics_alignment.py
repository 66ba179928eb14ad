"""Template fitting, classification and relative yaw against procedural meshes at known poses."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from a3d_mesh.metrics.alignment import (classify, common_period, fit_template, overlay_curve, overlay_reference,
                                        overlay_score, pair_alignment, period_deg, relative_yaw_error,
                                        shared_yaw_curve, shared_yaw_score, yaw_excess)
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


def test_yaw_excess_is_zero_at_the_best_yaw_and_one_for_a_random_yaw() -> None:
    g = torch.Generator().manual_seed(3)
    curve = torch.rand(72, generator=g, dtype=torch.float64) + 1.0
    best = int(curve.argmin())
    assert yaw_excess(curve.roll(-best), 360.0) == 0.0  # the best yaw moved to 0
    # Uniform relative yaw: averaged over every shift of the grid the score is exactly 1.
    scores = [yaw_excess(curve.roll(k), 360.0) for k in range(72)]
    assert sum(scores) / 72 == pytest.approx(1.0, abs=1e-9) and max(scores) > 1.0
    # Folding modulo a period of 120 deg: the minimum over the three copies of each yaw.
    folded = curve.view(3, 24).amin(0)
    assert yaw_excess(curve, 120.0) == pytest.approx(float((folded[0] - folded.min()) / (folded.mean() - folded.min())))
    assert sum(yaw_excess(curve.roll(k), 120.0) for k in range(24)) / 24 == pytest.approx(1.0, abs=1e-9)
    assert torch.isnan(torch.tensor(yaw_excess(torch.ones(72), 360.0)))  # flat: no yaw signal
    assert torch.isnan(torch.tensor(yaw_excess([], 360.0)))
    with pytest.raises(ValueError):
        yaw_excess(curve, 7.0)


def test_shared_yaw_score_finds_a_common_yaw_and_reads_the_whole_curves() -> None:
    tc, tb = template("chair"), template("bench")
    chair = fit_template(0.4 * rotate_yaw(tc.verts, 40.0) + 2.0, tc.faces, "chair")
    aligned = fit_template(rotate_yaw(tb.verts, 40.0), tb.faces, "bench")
    turned = fit_template(rotate_yaw(tb.verts, 130.0), tb.faces, "bench")
    assert shared_yaw_score(chair, aligned) < 0.05
    assert shared_yaw_score(chair, turned) > 0.5
    # C(delta) is lowest at delta = yaw_b - yaw_a (90 deg = grid step 18 of 5 deg).
    assert int(shared_yaw_curve(chair, turned).argmin()) == pytest.approx(18, abs=1)
    # A fit without its curve (e.g. from an old results file) scores NaN, not 0.
    bare = dataclasses.replace(chair, curve=[], yaws_deg=[])
    assert torch.isnan(torch.tensor(shared_yaw_score(bare, aligned)))


def test_overlay_score_is_zero_for_one_shape_in_one_frame_and_one_on_average() -> None:
    t, s = template("chair"), template("stool")
    moved = 3.0 * rotate_yaw(t.verts, 25.0) - 1.0  # the same chair: scaled, shifted, turned by 25
    curve = overlay_curve(t.verts, t.faces, moved, t.faces)
    assert int(curve.argmin()) == 5 and float(curve.min()) < 0.1  # delta = 25 deg: the sampling floor
    assert overlay_score(t.verts, t.faces, "chair", rotate_yaw(t.verts, 0.0) + 1.0, t.faces, "chair") < 0.02
    assert overlay_score(t.verts, t.faces, "chair", moved, t.faces, "chair") > 0.5
    # A stool turned by every 5-deg step of the pair's 120-deg period: the scores average to 1.
    scores = [overlay_score(t.verts, t.faces, "chair", rotate_yaw(s.verts, 5.0 * k), s.faces, "stool")
              for k in range(24)]
    assert sum(scores) / 24 == pytest.approx(1.0, abs=0.02)
    assert overlay_reference("table", "table") == pytest.approx(0.0, abs=1e-6)
    assert overlay_reference("chair", "bench") > 0.1  # faithful aligned chair and bench overlay turned
