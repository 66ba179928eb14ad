"""benchmarks/alignment.py: budget mapping, pair and table aggregation, and a dry end-to-end pass."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the alignment benchmark end to end on dry meshes: not in the quick loop (-m 'not slow')

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_alignment", ROOT / "benchmarks" / "alignment.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def fit(family: str, yaw: float, alternatives: list[float] | None = None) -> dict:
    period = {"chair": 360.0, "stool": 120.0, "table": 180.0, "bench": 360.0}[family]
    return {"family": family, "yaw_deg": yaw, "period_deg": period, "scale": 1.0, "translation": [0, 0, 0],
            "chamfer": 0.03, "alternatives": alternatives or [], "second_ratio": 2.0}


def mesh(name: str, family: str, yaw: float, fidelity: float = 0.03, correct: bool = True,
         alternatives: list[float] | None = None) -> dict:
    return {"name": name, "prompt": f"a red {family}", "family": family, "fitted": family if correct else "stool",
            "correct": correct, "fidelity": fidelity, "fit": fit(family, yaw, alternatives)}


def record(set_name: str, seed: int, mode: str, meshes: list[dict], time_s: float = 10.0, failed: int = 0) -> dict:
    return {"set": set_name, "seed": seed, "mode": mode, "meshes": meshes, "pairs": bench.pairs_of(meshes),
            "time_s": time_s, "failed": failed}


def test_family_of_and_budget_mapping() -> None:
    assert bench.family_of("a blue Table") == "table"
    with pytest.raises(ValueError):
        bench.family_of("a chair and a table")
    with pytest.raises(ValueError):
        bench.family_of("a sofa")
    budget = ["coarse.steps=7", "refine.steps=3", "refine.tet_resolution=16"]
    assert bench.step_overrides("tiny", budget, 1) == ["refine.tet_resolution=16", "coarse.steps=7", "refine.steps=3"]
    joint = bench.step_overrides("tiny", budget, 3)
    assert "coarse.steps=21" in joint and "refine.steps=9" in joint and "refine.tet_resolution=16" in joint
    # Without overrides the per-object budget is the preset's own step counts (tiny: 30 / 20).
    assert bench.step_overrides("tiny", [], 2) == ["coarse.steps=60", "refine.steps=40"]


def test_pairs_use_the_common_period_and_flag_ambiguity() -> None:
    pairs = bench.pairs_of([mesh("chair", "chair", 10.0), mesh("table", "table", 175.0),
                            mesh("bench", "bench", 100.0, alternatives=[280.0])])
    by = {(p["a"], p["b"]): p for p in pairs}
    assert by[("chair", "table")]["error_deg"] == pytest.approx(15.0)  # 165 mod 180 -> 15
    assert by[("chair", "table")]["period_deg"] == 180.0 and not by[("chair", "table")]["ambiguous"]
    amb = by[("chair", "bench")]
    assert amb["ambiguous"] and amb["error_deg"] == pytest.approx(90.0) and amb["error_min_deg"] == pytest.approx(90.0)
    assert by[("table", "bench")]["error_min_deg"] == pytest.approx(75.0)  # 105 mod 180 = 75; alt: 105 -> 75


def test_aggregation_means_spreads_and_separates_ambiguous_pairs() -> None:
    recs = [
        record("s1", 0, "joint", [mesh("chair", "chair", 0.0, 0.02), mesh("bench", "bench", 4.0, 0.04)], 30.0),
        record("s1", 1, "joint", [mesh("chair", "chair", 0.0, 0.04), mesh("bench", "bench", 8.0, 0.06)], 50.0),
        record("s1", 0, "independent", [mesh("chair", "chair", 0.0), mesh("bench", "bench", 90.0, correct=False)], 20.0),
        record("s1", 1, "independent", [mesh("chair", "chair", 0.0),
                                        mesh("bench", "bench", 170.0, alternatives=[350.0])], 20.0, failed=1),
    ]
    agg = bench.aggregate(recs)
    j, i = agg["joint"], agg["independent"]
    assert j["fidelity"][:2] == pytest.approx((0.04, math.sqrt(2) * 0.01))  # unit means 0.03, 0.05
    assert j["align_deg"][:2] == pytest.approx((6.0, math.sqrt(8.0)))
    assert j["align_chance"][0] == pytest.approx(6.0 / 90.0)
    assert j["time_s"][0] == pytest.approx(40.0) and j["ambiguous"][0] == 0
    # The ambiguous pair (seed 1) is counted and kept out of the main alignment number.
    assert i["align_deg"][:3] == pytest.approx((90.0, 0.0, 1))
    assert i["ambiguous"][0] == 1 and i["align_amb_deg"][0] == pytest.approx(170.0)
    assert i["accuracy"][0] == pytest.approx(0.75) and i["failed"][0] == 1
    table = bench.format_table(recs)
    assert "| joint | 2 | 0.040 ± 0.014 | 1.00 ± 0.00 | 6.0 ± 2.8 |" in table
    assert "| independent | 2 |" in table and "1 (170.0 ± 0.0)" in table
    assert "| s1 | 360 | 6.0 ± 2.8 | 90.0 ± 0.0 | 0 / 1 |" in table


def test_records_without_curves_or_meshes_score_n_a_and_paired_counts() -> None:
    # Mesh records as an older results file has them (no curve, no GLB): the scores are n/a.
    recs = [record("s1", 0, "joint", [mesh("chair", "chair", 0.0), mesh("bench", "bench", 4.0)]),
            record("s1", 0, "independent", [mesh("chair", "chair", 0.0), mesh("bench", "bench", 90.0)])]
    assert math.isnan(recs[0]["pairs"][0]["shared_yaw"]) and math.isnan(recs[0]["pairs"][0]["overlay"])
    assert "shared-yaw 0 of 0, overlay 0 of 0" in bench.format_table(recs)
    assert "own family: joint n/a (0 pairs), independent n/a (0 pairs)." in bench.format_table(recs)
    # Scores present: the joint unit counts as better where its mean score is lower.
    for r, (sy, ov) in zip(recs, [(0.1, 0.9), (0.8, 0.3)]):
        r["pairs"][0].update(shared_yaw=sy, overlay=ov)
    assert bench.paired_line(recs).endswith("shared-yaw 1 of 1 (sign test p = 0.500), overlay 0 of 1 (sign test p = 1.000).")
    assert bench.sign_test(8, 10) == pytest.approx(56 / 1024) and bench.sign_test(0, 4) == 1.0
    j = bench.aggregate(recs)["joint"]
    assert j["shared_yaw"][:2] == pytest.approx((0.1, 0.0)) and j["overlay"][0] == pytest.approx(0.9)


def curved(name: str, family: str, yaw: float) -> dict:
    """A mesh record whose template fit has a yaw curve with its one minimum at ``yaw`` (deg)."""
    m = mesh(name, family, yaw)
    yaws = [5.0 * k for k in range(72)]
    m["fit"].update(yaws_deg=yaws, curve=[1.0 - math.cos(math.radians(y - yaw)) for y in yaws])
    return m


def test_crossed_baseline_pairs_independent_runs_across_seeds() -> None:
    # Single runs land at their seed's yaw whatever the prompt: same-seed pairs look aligned
    # (chair and bench at 10 deg at seed 0, at 100 deg at seed 1); across seeds they are 90 deg apart.
    recs = [record("chair-bench", s, "independent", [curved("chair", "chair", y), curved("bench", "bench", y)])
            for s, y in ((0, 10.0), (1, 100.0))]
    recs += [record("chair-bench", s, "joint", [curved("chair", "chair", y), curved("bench", "bench", y + 5.0)])
             for s, y in ((0, 40.0), (1, 200.0))]
    crossed = bench.crossed_records(recs)
    assert [(r["mode"], r["seed"], len(r["pairs"])) for r in crossed] == [("independent-crossed", 0, 1),
                                                                          ("independent-crossed", 1, 1)]
    assert all(r["pairs"][0]["shared_yaw"] < 0.05 for r in recs if r["mode"] == "independent")
    # 90 deg apart on these curves: C(0) = 2 - 2 cos 45 deg over the mean 2 - 4 / pi.
    expect = (2 - 2 * math.cos(math.radians(45))) / (2 - 4 / math.pi)
    assert [r["pairs"][0]["shared_yaw"] for r in crossed] == pytest.approx([expect, expect], abs=0.03)
    assert crossed[1]["meshes"] is recs[1]["meshes"]  # fidelity and time stay the independent ones
    table = bench.format_table(recs + crossed)
    assert "| independent-crossed | 2 |" in table
    assert ("Units where the joint run scores below its independent runs: shared-yaw 0 of 2 (sign test p = 1.000)"
            in table)
    assert "below its independent runs paired across seeds: shared-yaw 2 of 2 (sign test p = 0.250)" in table
    assert bench.crossed_records(recs[:1]) == []  # one seed: nothing to cross
    # The class frame where it is defined: only pairs whose meshes both fit their own family.
    recs[3]["pairs"][0]["both_correct"] = False
    line = bench.format_table(recs + crossed).strip().splitlines()[-1]
    assert line.startswith("Shared-yaw score of the pairs whose meshes both fit their own family: joint ")
    assert "over 1 pairs" in line and "independent 0.00 over 2 pairs (2 under 0.2)" in line
    mean_crossed = sum(r["pairs"][0]["shared_yaw"] for r in crossed) / 2
    assert f"independent-crossed {mean_crossed:.2f} over 2 pairs (0 under 0.2)" in line


def test_empty_measurements_are_n_a_not_zero() -> None:
    recs = [record("s2", 0, "joint", [], failed=1)]
    a = bench.aggregate(recs)["joint"]
    assert a["align_deg"][2] == 0 and math.isnan(a["align_deg"][0])
    assert "n/a" in bench.format_table(recs)


def test_resume_safe_skips_a_finished_run_and_the_cli_reports_failures(tmp_path: Path) -> None:
    done = tmp_path / "done"
    done.mkdir()
    (done / "manifest.json").write_text("{}")
    (done / "bench-timing.json").write_text(json.dumps({"wall_s": 12.5, "rc": 0}))
    rec = bench.cli_run(done, ("a red chair",), "no-such-preset", 0, [], True, tmp_path / "log")
    assert rec["wall_s"] == 12.5 and not (tmp_path / "log").exists()
    # A real CLI call that fails on its input: exit code 2 recorded, no timing written.
    bad = bench.cli_run(tmp_path / "bad", ("a red chair",), "no-such-preset", 0, [], True, tmp_path / "log")
    assert bad["rc"] == 2 and not (tmp_path / "bad" / "bench-timing.json").exists()
    assert "no-such-preset" in (tmp_path / "log").read_text()


def test_dry_end_to_end_writes_results_and_markdown(tmp_path: Path) -> None:
    md = tmp_path / "RESULTS.md"
    argv = ["--dry-meshes", "--sets", "chair-bench", "--seeds", "1", "--out", str(tmp_path / "out"), "--write",
            "--results-md", str(md)]
    bench.main(argv)
    recs = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["mode"] for r in recs] == ["joint", "independent"]
    joint = recs[0]
    assert all(m["correct"] for r in recs for m in r["meshes"]) and len(joint["meshes"]) == 2
    # Dry joint yaws share one common yaw up to 3 deg of noise: the fitted error must show it.
    truth = json.loads((tmp_path / "out" / "chair-bench" / "seed0" / "joint" / "manifest.json").read_text())["dry_yaws"]
    err = abs(truth[0] - truth[1])
    assert joint["pairs"][0]["error_deg"] == pytest.approx(min(err, 360 - err), abs=3.0)
    # The chance-normalised scores read the yaw curves and the meshes themselves: a common yaw
    # scores near 0 on the template curves; the overlay of a chair and a bench is measured, with
    # the aligned templates' own overlay score beside it.
    pair = joint["pairs"][0]
    assert pair["shared_yaw"] < 0.2 and 0.0 <= pair["overlay"] < 10.0 and pair["overlay_reference"] > 0.1
    assert len(joint["meshes"][0]["fit"]["curve"]) == 72
    text = md.read_text()
    assert "## Alignment: joint A3D vs independent runs" in text and "--dry-meshes" in text and "| joint | 1 |" in text
    assert "Units where the joint run scores below its independent runs: shared-yaw " in text


def test_parallel_runs_are_measured_once_and_failures_keep_their_time(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    calls: list[Path] = []

    def failing_run(run_dir: Path, *args, **kwargs) -> dict:  # noqa: ANN002, ANN003
        calls.append(run_dir)
        return {"wall_s": 100.0, "rc": 2, "resumed": False, "command": "a3d-mesh run ..."}

    monkeypatch.setattr(bench, "cli_run", failing_run)
    bench.main(["--sets", "chair-bench", "--seeds", "1", "--jobs", "2", "--out", str(tmp_path / "out")])
    assert len(calls) == 3  # joint + 2 independent, each once: no serial re-run of a failed run
    recs = {r["mode"]: r for r in json.loads((tmp_path / "out" / "results.json").read_text())}
    assert (recs["joint"]["time_s"], recs["joint"]["failed"]) == (100.0, 1)
    assert (recs["independent"]["time_s"], recs["independent"]["failed"]) == (200.0, 2)


def test_overlay_page_draws_every_unit_in_the_score_frame(tmp_path: Path) -> None:
    spec2 = importlib.util.spec_from_file_location("bench_overlays", ROOT / "benchmarks" / "alignment_overlays.py")
    overlays = importlib.util.module_from_spec(spec2)
    spec2.loader.exec_module(overlays)
    from a3d_mesh.toy.shapes import rotate_yaw, template

    # The top view is in the overlay score's frame: scale and offset do not show, a half turn
    # about +Y turns the picture by 180 degrees (x right, -z up, centred on the centroid).
    t = template("chair")
    a = overlays.top_view([(t.verts, t.faces)], size=120)
    b = overlays.top_view([(2.0 * rotate_yaw(t.verts, 180.0) + 5.0, t.faces)], size=120)
    ink_a, ink_b = ((x.amax(-1) - x.amin(-1)) > 0.1 for x in (a, b))  # coloured, not the grey cross
    assert float((ink_a & ink_b.flip(0, 1)).sum() / ink_a.sum()) > 0.95
    assert float((ink_a & ink_b).sum() / ink_a.sum()) < 0.7  # the chair is not symmetric under it
    # A page of a dry benchmark: one labelled row per (set, seed), joint and independent panels.
    bench.main(["--dry-meshes", "--sets", "chair-bench", "--seeds", "2", "--out", str(tmp_path / "out")])
    out = overlays.main([str(tmp_path / "out" / "results.json"), "--out", str(tmp_path / "page.png"), "--size", "100"])
    from PIL import Image

    w, h = Image.open(out).size
    assert (w, h) == (2 * 100 + 12, 2 * (100 + 18))
