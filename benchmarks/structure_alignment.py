"""Structure alignment (issue 24, part 4): do jointly generated objects share part parameters more
than independently generated ones?

Every object mesh is fitted with its family's parametric model
(:func:`a3d_mesh.metrics.structure.fit_structure`, in the set's world frame), and every pair of a
set gets :func:`a3d_mesh.metrics.structure.structure_distance` (0: same structure, ~1.15 for two
independent draws of one family; ``-`` when a mesh does not fit its own family). A *unit* is one
joint run and the independent runs of the same prompts (one single-prompt run per object); each
pair of families of the unit is scored in both, and the sign test counts the pairs where the joint
run's distance is lower (one-sided: no difference means each pair is a coin flip).

Real runs (folders of ``a3d-mesh run``; meshes from ``TrainedSet.load(run_dir).mesh(code)``; the
family is the object's name when it is one, else the one family word of its prompt):

    .venv/bin/python benchmarks/structure_alignment.py \\
        --unit runs/bench-alignment/chair-bench/seed0/joint runs/bench-alignment/chair-bench/seed0/indep-chair \\
               runs/bench-alignment/chair-bench/seed0/indep-bench \\
        --unit ...
    .venv/bin/python benchmarks/structure_alignment.py --bench-root runs/bench-alignment   # its layout

Dry mode (no runs: procedural meshes, seconds): joint objects share their structure (one quantile
per shared quantity and one back side, drawn once per set), independent ones are drawn separately
(random back sides); vertices are jittered, then measured exactly like run meshes:

    .venv/bin/python benchmarks/structure_alignment.py --dry --units 2
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from a3d_mesh.metrics.structure import (COVERAGE_MAX, RESIDUAL_MAX, StructureFit, fit_structure,  # noqa: E402
                                        structure_distance, structure_terms)
from a3d_mesh.metrics.surface import face_areas  # noqa: E402
from a3d_mesh.toy.shapes import FAMILIES  # noqa: E402
from a3d_mesh.toy.structure import (BACK_SIDES, HAS_BACK, RANGES, Structure, build_structure,  # noqa: E402
                                    sample_structure, template_structure)

SETS = {"chair-bench": ("chair", "bench"), "chair-stool": ("chair", "stool"), "table-bench": ("table", "bench"),
        "chair-table": ("chair", "table"), "chair-stool-table": ("chair", "stool", "table")}
# Family parameters tied to one shared draw in the dry joint sets (the stool's radius follows the
# footprint, its leg radius the inset, reversed: a larger inset is a smaller leg radius).
_SHARED_Q = {"seat_h": "seat_h", "thick": "thick", "leg": "leg", "width": "width", "depth": "depth",
             "leg_inset": "leg_inset", "back_h": "back_h", "rail": "rail", "radius": "width"}


def family_of(name: str, prompt: str) -> str:
    """An object's family: its asset name when that is one, else the one family word of its prompt."""
    if name in FAMILIES:
        return name
    found = [f for f in FAMILIES if f in prompt.lower().replace(",", " ").split()]
    if len(found) != 1:
        raise ValueError(f"object {name!r} ({prompt!r}) must be named by, or name, exactly one of "
                         f"{', '.join(FAMILIES)}")
    return found[0]


def run_meshes(run_dir: Path) -> list[tuple[str, str, torch.Tensor, torch.Tensor]]:
    """``(name, family, verts, faces)`` of every object of a run folder, world frame."""
    from a3d_mesh.run import TrainedSet

    ts = TrainedSet.load(Path(run_dir), device="cpu")
    return [(n, family_of(n, p), *ts.mesh(ts.code(k)))
            for k, (n, p) in enumerate(zip(ts.prompts.names, ts.prompts.prompts))]


def dry_set(families: tuple[str, ...], joint: bool, g: torch.Generator, jitter: float) -> list[tuple]:
    """Procedural ``(name, family, verts, faces, truth)`` of one set (module docstring), jittered by
    up to ``jitter`` world units per coordinate."""
    if joint:
        q = {k: float(torch.rand((), generator=g)) for k in sorted(set(_SHARED_Q.values()))}
        side = BACK_SIDES[int(torch.randint(4, (), generator=g))]
    out = []
    for fam in families:
        if joint:
            quant = {k: q[src] for k, src in _SHARED_Q.items() if k in RANGES[fam]}
            if fam == "stool":
                quant["leg_radius"] = 1 - q["leg_inset"]
            s = sample_structure(fam, g, quantiles=quant)
            s = Structure(fam, s.params, _orientation(fam, side))
        else:
            s = sample_structure(fam, g, BACK_SIDES)
            s = Structure(fam, s.params, _orientation(fam, s.back_side))
        v, f = build_structure(s)
        v = v + (torch.rand(v.shape, generator=g) * 2 - 1) * jitter
        out.append((fam, fam, v, f, s))
    return out


def _orientation(family: str, side: str) -> str:
    """The side as the family can show it: a table turned 180 deg is the same table, a stool has none."""
    if family == "stool":
        return "-z"
    if not HAS_BACK[family]:
        return {"+z": "-z", "+x": "-x"}.get(side, side)
    return side


def score_pairs(fits: list[StructureFit], min_spread: float = 0.0) -> dict[tuple[str, str, int], dict | None]:
    """Structure distance and terms of every pair of one set, keyed by the two families (sorted)
    and the pair's occurrence (0 unless a set repeats a family), so joint and independent pairs
    match; ``None`` where a mesh does not fit its family."""
    out: dict[tuple[str, str, int], dict | None] = {}
    for a, b in itertools.combinations(fits, 2):
        fa, fb = sorted((a.family, b.family))
        k = sum(1 for key in out if key[:2] == (fa, fb))
        terms = structure_terms(a, b, min_spread=min_spread)
        out[(fa, fb, k)] = None if terms is None else {"distance": structure_distance(a, b, min_spread=min_spread),
                                                       "terms": terms}
    return out


def sign_test(wins: int, n: int) -> float:
    """One-sided sign test: the chance of ``wins`` or more of ``n`` pairs by coin flips."""
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2 ** n if n else math.nan


def _mean(x: list[float]) -> float:
    return sum(x) / len(x) if x else math.nan


def _fmt(d: float | None) -> str:
    return "-" if d is None else f"{d:.3f}"


def _fit(family: str, verts: torch.Tensor, faces: torch.Tensor, **fit_kwargs: object) -> StructureFit:
    """:func:`fit_structure`, or a non-fit for a mesh without surface (an object a run emptied)."""
    if faces.shape[0] == 0 or float(face_areas(verts.float(), faces).sum()) <= 0:
        return StructureFit(family, template_structure(family), (0.0, 0.0, 0.0), math.inf, math.inf, False, {}, 0.0)
    return fit_structure(verts, faces, family, **fit_kwargs)


def measure_unit(name: str, joint: list[tuple], indep: list[tuple], min_spread: float = 0.0,
                 **fit_kwargs: object) -> dict:
    """Fit every mesh of a unit (``(name, family, verts, faces, ...)`` tuples) and score its pairs:
    a record ``{"unit", "fits": {mode: [fit dicts]}, "pairs": [{"a", "b", "joint", "independent",
    "terms"}]}`` (distances ``None`` where a mesh does not fit its family)."""
    rec: dict = {"unit": name, "fits": {}, "pairs": []}
    scored = {}
    for mode, meshes in (("joint", joint), ("independent", indep)):
        fits = []
        for m in meshes:
            fits.append(_fit(m[1], m[2], m[3], **fit_kwargs))
            rec["fits"].setdefault(mode, []).append({"name": m[0], **fits[-1].to_dict()})
        scored[mode] = score_pairs(fits, min_spread)
    for key, j in scored["joint"].items():
        i = scored["independent"].get(key)
        rec["pairs"].append({"a": key[0], "b": key[1], "joint": j and j["distance"], "independent": i and i["distance"],
                             "terms": {"joint": j and j["terms"], "independent": i and i["terms"]}})
    return rec


def format_table(records: list[dict]) -> str:
    """Per-pair distances, per-mesh fit status, and the sign test joint < independent."""
    lines = ["| unit | pair | joint | independent | joint lower |", "|---|---|---|---|---|"]
    wins = n = 0
    for r in records:
        for p in r["pairs"]:
            both = p["joint"] is not None and p["independent"] is not None
            lower = "-" if not both else ("yes" if p["joint"] < p["independent"] else "no")
            n += both
            wins += both and p["joint"] < p["independent"]
            lines.append(f"| {r['unit']} | {p['a']}-{p['b']} | {_fmt(p['joint'])} | {_fmt(p['independent'])} "
                         f"| {lower} |")
    lines += ["", "| unit | mode | family | fits | residual | coverage | back side | seconds |",
              "|---|---|---|---|---|---|---|---|"]
    for r in records:
        for mode, fits in r["fits"].items():
            lines += [f"| {r['unit']} | {mode} | {f['family']} | {'yes' if f['fits'] else 'no'} "
                      f"| {f['residual']:.4f} | "
                      f"{f['coverage']:.3f} | {f['back_side']} | {f['seconds']:.1f} |" for f in fits]
    j = [p["joint"] for r in records for p in r["pairs"] if p["joint"] is not None]
    i = [p["independent"] for r in records for p in r["pairs"] if p["independent"] is not None]
    lines += ["", f"Scored pairs: joint {len(j)} (mean {_mean(j):.3f}), independent {len(i)} (mean {_mean(i):.3f}); "
              f"joint lower in {wins} of {n} pairs scored in both, one-sided sign test p = {sign_test(wins, n):.3g}."]
    return "\n".join(lines)


def bench_root_units(root: Path) -> list[tuple[str, Path, list[Path]]]:
    """Units of benchmarks/alignment.py's layout: ``ROOT/<set>/seed<k>/{joint, indep-*}``."""
    return [(f"{j.parent.parent.name}/{j.parent.name}", j, sorted(j.parent.glob("indep-*")))
            for j in sorted(Path(root).glob("*/seed*/joint")) if j.is_dir()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unit", nargs="+", action="append", default=[], metavar="RUN_DIR",
                    help="a joint run folder, then the independent run folders of its objects (repeatable)")
    ap.add_argument("--bench-root", type=Path, help="every <set>/seed<k>/ unit of a benchmarks/alignment.py folder")
    ap.add_argument("--dry", action="store_true", help="procedural meshes instead of runs")
    ap.add_argument("--sets", nargs="+", choices=sorted(SETS), default=list(SETS), help="--dry: sets")
    ap.add_argument("--units", type=int, default=1, help="--dry: draws (seeds) per set")
    ap.add_argument("--jitter", type=float, default=0.01, help="--dry: vertex jitter (world units, uniform +-)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--residual-max", type=float, default=RESIDUAL_MAX, help="a mesh fits its family below this")
    ap.add_argument("--coverage-max", type=float, default=COVERAGE_MAX, help="... and below this coverage")
    ap.add_argument("--min-spread", type=float, default=0.0,
                    help="floor of the spreads that normalise the distance (world units; 0: the training spreads)")
    ap.add_argument("--json", type=Path, help="write the records (fits, pairs) here")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    kw = {"residual_max": args.residual_max, "coverage_max": args.coverage_max}
    t0, records = time.perf_counter(), []
    if args.dry:
        for name in args.sets:
            for u in range(args.units):
                g = torch.Generator().manual_seed(args.seed * 1000 + u * 31 + sorted(SETS).index(name))
                joint, indep = dry_set(SETS[name], True, g, args.jitter), dry_set(SETS[name], False, g, args.jitter)
                records.append(measure_unit(f"{name}/dry{u}", joint, indep, args.min_spread, **kw))
    else:
        units = [(u[0], Path(u[0]), [Path(p) for p in u[1:]]) for u in args.unit]
        units += bench_root_units(args.bench_root) if args.bench_root else []
        if not units:
            raise SystemExit("nothing to measure: give --unit JOINT INDEP..., --bench-root DIR or --dry")
        for name, joint_dir, indep_dirs in units:
            joint = run_meshes(joint_dir)
            indep = [m for d in indep_dirs for m in run_meshes(d)]
            records.append(measure_unit(name, joint, indep, args.min_spread, **kw))
    table = format_table(records) + f"\n\n({time.perf_counter() - t0:.0f} s, {torch.get_num_threads()} threads)"
    print(table)
    if args.json:
        args.json.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
    return table


if __name__ == "__main__":
    main()
