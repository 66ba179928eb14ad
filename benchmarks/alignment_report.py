"""The alignment benchmark's report: per-unit metrics, aggregates and the markdown tables.

Input: records of ``benchmarks/alignment.py`` (one per set, seed and mode, with ``meshes`` and
``pairs``; see its docstring for what each number means). A *unit* is one (set, seed, mode);
aggregates are the mean and sample standard deviation of unit means.
"""

from __future__ import annotations

import math

MODES = ("joint", "independent")
CROSSED = "independent-crossed"  # the independent runs paired across seeds (alignment.crossed_records)
ROWS = (*MODES, CROSSED)  # the report's rows, in order; a mode without records is left out


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def unit_summary(rec: dict) -> dict:
    """One (set, seed, mode) record -> its scalar metrics (NaN where nothing was measurable)."""
    meshes, pairs = rec["meshes"], rec["pairs"]
    clear = [p for p in pairs if not p["ambiguous"]]
    amb = [p for p in pairs if p["ambiguous"]]
    return {"fidelity": _mean([m["fidelity"] for m in meshes]),
            "accuracy": _mean([float(m["correct"]) for m in meshes]),
            "align_deg": _mean([p["error_deg"] for p in clear]),
            "align_chance": _mean([p["error_deg"] / p["chance_deg"] for p in clear]),
            "ambiguous": float(len(amb)), "align_amb_deg": _mean([p["error_deg"] for p in amb]),
            "shared_yaw": _mean([p.get("shared_yaw", math.nan) for p in pairs]),
            "overlay": _mean([p.get("overlay", math.nan) for p in pairs]),
            "failed": float(rec["failed"]), "time_s": rec["time_s"]}


def aggregate(records: list[dict]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """Per mode, per metric: (mean, sample std, number of units with a value) over (set, seed) units.
    ``ambiguous`` and ``failed`` are totals (std 0), not means."""
    out: dict[str, dict[str, tuple[float, float, int]]] = {}
    for mode in ROWS:
        units = [unit_summary(r) for r in records if r["mode"] == mode]
        if not units:
            continue
        out[mode] = {}
        for key in units[0]:
            xs = [u[key] for u in units if not math.isnan(u[key])]
            if key in ("ambiguous", "failed"):
                out[mode][key] = (float(sum(xs)), 0.0, len(xs))
                continue
            m = _mean(xs)
            sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
            out[mode][key] = (m, sd if xs else math.nan, len(xs))
    return out


def _pm(v: tuple[float, float, int], fmt: str = "{:.3f}") -> str:
    m, sd, n = v
    return "n/a" if n == 0 or math.isnan(m) else f"{fmt.format(m)} ± {fmt.format(sd)}"


def format_table(records: list[dict]) -> str:
    """The markdown tables: each mode overall (joint, independent and, where present, independent
    paired across seeds), then alignment per set; then the paired line and the faithful pairs' line."""
    agg = aggregate(records)
    units = {m: sum(1 for r in records if r["mode"] == m) for m in ROWS}
    lines = ["| mode | units | fidelity (chamfer) | class acc | align err (deg) | err / chance | "
             "ambiguous pairs (their err, deg) | shared-yaw score | overlay score | failed runs | time (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for mode, a in agg.items():
        lines.append(f"| {mode} | {units[mode]} | {_pm(a['fidelity'])} | {_pm(a['accuracy'], '{:.2f}')} | "
                     f"{_pm(a['align_deg'], '{:.1f}')} | {_pm(a['align_chance'], '{:.2f}')} | "
                     f"{int(a['ambiguous'][0])} ({_pm(a['align_amb_deg'], '{:.1f}')}) | {_pm(a['shared_yaw'], '{:.2f}')} | "
                     f"{_pm(a['overlay'], '{:.2f}')} | {int(a['failed'][0])} | "
                     f"{_pm(a['time_s'], '{:.0f}')} |")
    lines += ["", "| set | period (deg) | joint align err (deg) | independent align err (deg) | ambiguous j / i | "
              "overlay score j / i (templates) |", "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["set"] for r in records):
        cells = []
        for mode in MODES:
            sub = [r for r in records if r["set"] == name and r["mode"] == mode]
            cells.append(aggregate(sub).get(mode) if sub else None)
        periods = sorted({p["period_deg"] for r in records if r["set"] == name for p in r["pairs"]})
        err = [_pm(c["align_deg"], "{:.1f}") if c else "n/a" for c in cells]
        amb = [str(int(c["ambiguous"][0])) if c else "-" for c in cells]
        ov = [_pm(c["overlay"], "{:.2f}") if c else "n/a" for c in cells]
        ref = _mean([p["overlay_reference"] for r in records if r["set"] == name for p in r["pairs"]
                     if "overlay_reference" in p])
        lines.append(f"| {name} | {', '.join(f'{p:g}' for p in periods) or '-'} | {err[0]} | {err[1]} | "
                     f"{amb[0]} / {amb[1]} | {ov[0]} / {ov[1]} ({'n/a' if math.isnan(ref) else f'{ref:.2f}'}) |")
    lines += ["", paired_line(records), "", faithful_line(records)]
    return "\n".join(lines) + "\n"


def faithful_line(records: list[dict]) -> str:
    """The shared-yaw score over the pairs whose two meshes both fit their own family best, per
    mode: the class frame where it is defined (a chair-like bench has no bench frame of its own;
    the bench template fits the chair template 30 deg turned), pooled over pairs, not units."""
    parts = []
    for mode in ROWS:
        xs = [p["shared_yaw"] for r in records if r["mode"] == mode for p in r["pairs"]
              if p["both_correct"] and not math.isnan(p.get("shared_yaw", math.nan))]
        if any(r["mode"] == mode for r in records):
            parts.append(f"{mode} {_mean(xs):.2f} over {len(xs)} pairs ({sum(x < 0.2 for x in xs)} under 0.2)"
                         if xs else f"{mode} n/a (0 pairs)")
    return "Shared-yaw score of the pairs whose meshes both fit their own family: " + ", ".join(parts) + "."


def sign_test(wins: int, n: int) -> float:
    """One-sided sign test: the chance of ``wins`` or more of ``n`` paired units by coin flips."""
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2 ** n if n else math.nan


def by_unit(records: list[dict]) -> dict[tuple[str, int], dict[str, dict]]:
    """Records grouped by (set, seed), then by mode, in first-seen order."""
    units: dict[tuple[str, int], dict[str, dict]] = {}
    for r in records:
        units.setdefault((r["set"], r["seed"]), {})[r["mode"]] = r
    return units


def paired_line(records: list[dict]) -> str:
    """How often the joint run of a (set, seed) scores below (better than) its independent runs,
    with the one-sided sign test's p (no difference: each unit a coin flip); a second sentence
    against the independent runs paired across seeds where the records have them."""
    units = {k: {mode: unit_summary(r) for mode, r in recs.items()} for k, recs in by_unit(records).items()}
    lines = []
    for base, label in (("independent", "its independent runs"), (CROSSED, "its independent runs paired across seeds")):
        if base == CROSSED and not any(base in u for u in units.values()):
            continue
        parts = []
        for key, name in (("shared_yaw", "shared-yaw"), ("overlay", "overlay")):
            both = [(u["joint"][key], u[base][key]) for u in units.values()
                    if "joint" in u and base in u and not (math.isnan(u["joint"][key]) or math.isnan(u[base][key]))]
            wins = sum(j < i for j, i in both)
            parts.append(f"{name} {wins} of {len(both)}" + (f" (sign test p = {sign_test(wins, len(both)):.3f})"
                                                             if both else ""))
        lines.append(f"Units where the joint run scores below {label}: " + ", ".join(parts) + ".")
    return " ".join(lines)
