"""Structure fits on procedural meshes of known parameters, and the structure distance.

Tolerances (world units; the scene cube is [-1, 1]^3): 0.02 for every length on clean meshes
(the fit is exact up to the optimiser: errors are ~0.001, the stool's 0.003 is its 24-gon seat
and 12-gon legs against a true cylinder), 0.03 with vertices jittered by up to 0.01.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from a3d_mesh.metrics.structure import (COVERAGE_MAX, RESIDUAL_MAX, StructureFit, fit_structure, structure_distance,
                                        structure_terms)
from a3d_mesh.toy.structure import (BACK_SIDES, HAS_BACK, Structure, build_structure, sample_structure,
                                    spread, template_structure)

SIDES = {"chair": BACK_SIDES, "bench": BACK_SIDES, "table": ("-z", "-x"), "stool": ("-z",)}


def _known(family: str, seed: int) -> Structure:
    return sample_structure(family, torch.Generator().manual_seed(seed), SIDES[family])


def _check(fit: StructureFit, s: Structure, tol: float) -> None:
    assert fit.structure.back_side == s.back_side
    for k, want in s.params.items():
        got = fit.structure.params[k]
        if k == "leg_angle":
            d = (got - want) % 120
            assert min(d, 120 - d) < 3.0, (k, got, want)
        else:
            assert got == pytest.approx(want, abs=tol), (k, got, want)


@pytest.mark.parametrize("family,seed", [("chair", 0), ("chair", 1), ("stool", 0), ("table", 1), ("bench", 2)])
def test_parameters_side_and_translation_are_recovered(family: str, seed: int) -> None:
    s = _known(family, seed)
    v, f = build_structure(s)
    shift = torch.tensor([0.12, 0.3, -0.07])  # off-centre and lifted: the fit finds the origin
    fit = fit_structure(v + shift, f, family)
    _check(fit, s, 0.02)
    assert fit.fits and fit.residual < 0.005
    want_t = (0.12, float(v[:, 1].min()) + 0.3, -0.07)
    assert fit.translation == pytest.approx(want_t, abs=0.01)
    assert fit.seconds > 0  # recorded; how long a fit takes is the benchmark's business, not a test's
    if HAS_BACK[family]:  # the true side is clearly the best one
        others = [l for side, l in fit.side_loss.items() if side != s.back_side]
        assert min(others) > 3 * fit.side_loss[s.back_side]


@pytest.mark.parametrize("family", ["chair", "stool", "bench"])
def test_jittered_vertices(family: str) -> None:
    s = _known(family, 4)
    v, f = build_structure(s)
    v = v + (torch.rand(v.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 0.01
    fit = fit_structure(v, f, family)
    _check(fit, s, 0.03)
    assert fit.fits and fit.residual < 0.01


@pytest.mark.parametrize("family,other", [("chair", "bench"), ("table", "chair"), ("stool", "table")])
def test_a_mesh_of_another_family_fits_worse_and_not_at_all(family: str, other: str) -> None:
    v, f = build_structure(_known(family, 5))
    mine, theirs = fit_structure(v, f, other), fit_structure(*build_structure(_known(other, 5)), other)
    assert mine.residual > 5 * theirs.residual and mine.residual > RESIDUAL_MAX
    assert not mine.fits and theirs.fits


def _fit(s: Structure, fits: bool = True) -> StructureFit:
    """A fit as fit_structure would report for a perfect match (no optimisation)."""
    return StructureFit(s.family, s, (0.0, 0.0, 0.0), 0.0 if fits else 1.0, 0.0, fits, {}, 0.0)


def test_distance_zero_for_identical_structures_and_exact_per_parameter() -> None:
    a = template_structure("chair")
    assert structure_distance(_fit(a), _fit(a)) == 0.0
    sd = spread("chair")["seat_h"]
    b = Structure("chair", dict(a.params, seat_h=a.params["seat_h"] + 0.05))
    terms = structure_terms(_fit(a), _fit(b))
    assert terms is not None and terms["seat_h"] == pytest.approx(0.05 / sd)
    assert sum(terms.values()) == pytest.approx(0.05 / sd)
    assert structure_distance(_fit(a), _fit(b)) == pytest.approx(0.05 / sd / len(terms))
    # Shared by chairs: footprint, legs, seat, back and the orientation.
    assert set(terms) == {"seat_h", "thick", "leg", "width", "depth", "leg_inset", "back_h", "rail", "orientation"}


def test_a_differently_placed_back_and_higher_seats_are_further() -> None:
    a = template_structure("bench")
    base = structure_distance(_fit(a), _fit(a))
    turned = structure_terms(_fit(a), _fit(Structure("bench", a.params, "-x")))
    opposite = structure_terms(_fit(a), _fit(Structure("bench", a.params, "+z")))
    assert turned["orientation"] == 1.0 and opposite["orientation"] == 2.0
    d = [structure_distance(_fit(a), _fit(Structure("bench", dict(a.params, seat_h=a.params["seat_h"] + dh))))
         for dh in (0.01, 0.03, 0.05)]
    assert base == 0.0 < d[0] < d[1] < d[2]
    # A table looks the same turned by 180 deg: a chair with its back on +z is aligned with a -z table.
    chair, table = template_structure("chair", "+z"), template_structure("table", "-z")
    assert structure_terms(_fit(chair), _fit(table))["orientation"] == 0.0
    assert structure_terms(_fit(chair), _fit(template_structure("table", "-x")))["orientation"] == 1.0


def test_families_are_compared_by_offsets_from_their_means() -> None:
    # Two mid-range members of different families share their structure (a bench is wider by class).
    chair, bench = _fit(template_structure("chair")), _fit(template_structure("bench"))
    assert structure_distance(chair, bench) == pytest.approx(0.0, abs=1e-9)
    assert structure_distance(chair, bench, centred=False) > 3.0  # raw: the class offsets count
    stool = _fit(template_structure("stool"))
    terms = structure_terms(chair, stool)
    assert "orientation" not in terms and "back_h" not in terms and set(terms) >= {"width", "leg_inset", "seat_h"}


def test_no_distance_when_a_mesh_does_not_fit_its_family() -> None:
    a = template_structure("chair")
    assert structure_distance(_fit(a), _fit(a, fits=False)) is None
    assert structure_terms(_fit(a, fits=False), _fit(a)) is None


def test_fitted_pairs_end_to_end() -> None:
    s = _known("chair", 6)
    v, f = build_structure(s)
    same = fit_structure(v, f, "chair"), fit_structure(v, f, "chair", seed=1)
    moved = fit_structure(*build_structure(Structure("chair", s.params, "+x")), "chair")
    higher = fit_structure(*build_structure(Structure("chair", dict(s.params, seat_h=s.params["seat_h"] + 0.06))),
                           "chair")
    d_same = structure_distance(*same)
    assert d_same < 0.1
    assert structure_distance(same[0], moved) > d_same + 0.1  # orientation 1 over 9 terms: 0.111
    assert structure_distance(same[0], higher) > d_same + 0.06 / spread("chair")["seat_h"] / 9 * 0.8
    assert structure_distance(same[0], fit_structure(v, f, "bench")) is None  # a chair is no bench


def test_thresholds_and_bad_family() -> None:
    assert 0 < RESIDUAL_MAX < 0.04 and 0 < COVERAGE_MAX < 0.09  # own family <= 0.006 / 0.055, others >= 0.043 / 0.091
    v, f = build_structure(template_structure("chair"))
    with pytest.raises(ValueError, match="unknown toy family"):
        fit_structure(v, f, "sofa")
    assert dataclasses.asdict(_fit(template_structure("chair")))["fits"] is True
    assert math.isfinite(_fit(template_structure("stool")).residual)


def _bench():  # noqa: ANN202 - the benchmark script, imported as a module
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    return importlib.import_module("structure_alignment")


def test_benchmark_dry_mode_separates_joint_from_independent() -> None:
    table = _bench().main(["--dry", "--sets", "chair-table", "--units", "1"])
    assert "joint lower in 1 of 1 pairs" in table and "| chair-table/dry0 | chair-table |" in table


def test_benchmark_finds_units_and_families(tmp_path) -> None:  # noqa: ANN001
    b = _bench()
    assert b.family_of("chair", "a red chair") == "chair" and b.family_of("seat", "a blue bench, wooden") == "bench"
    with pytest.raises(ValueError, match="exactly one"):
        b.family_of("thing", "a chair and a table")
    for d in ("chair-bench/seed0/joint", "chair-bench/seed0/indep-chair", "chair-bench/seed0/indep-bench",
              "chair-bench/seed1/joint"):
        (tmp_path / d).mkdir(parents=True)
    units = b.bench_root_units(tmp_path)
    assert [(u[0], u[1].name, [p.name for p in u[2]]) for u in units] == [
        ("chair-bench/seed0", "joint", ["indep-bench", "indep-chair"]), ("chair-bench/seed1", "joint", [])]
    # An emptied object (no surface) is a non-fit, not an error.
    fit = b._fit("chair", torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.int64))
    assert not fit.fits and structure_distance(fit, fit) is None
