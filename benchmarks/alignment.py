"""Benchmark (issue 9): does joint A3D generation align a set that independent runs leave misaligned?

For each prompt set and seed, through the product's own CLI (``a3d-mesh run``, as a subprocess):

* **joint**: one run of the whole set (N prompts);
* **independent**: one single-prompt run per prompt, same seed, same per-object budget.

Budget: the *per-object budget* is ``coarse.steps`` / ``refine.steps`` of the preset after the
``--budget`` overrides (what a one-prompt run of that preset does). Independent runs get exactly
that; the joint run of N prompts gets N times both step counts (A3D's own rule: 20k steps for a
pair, 30k for three), so every object gets the same number of SDS steps either way. Every other
``--budget`` override (e.g. ``refine.tet_resolution=32``) is passed to all runs unchanged.

Measured per mesh (the exported GLB, read back with ``a3d_mesh.train.guide.load_mesh``) with
:mod:`a3d_mesh.metrics.alignment`: the nearest family (class accuracy against the prompt's family)
and the fidelity, the Chamfer distance (template units, i.e. the mesh scaled to the template's RMS
radius; ~0.02 is the sampling floor of a perfect match, ~0.11+ is a wrong family) to the prompt
family's template at its best yaw and scale. Per pair of a set: the relative yaw error of the
best-fit yaws, modulo the symmetry common to both families (``relative_yaw_error``; the truth for
an aligned set is 0), also divided by its chance level (P/4 for period P: 1.0 means no better than
random yaws). Pairs where a fit is near-ambiguous (another yaw within 10% of the best) are counted
and reported apart, never mixed into the main number. Time: wall seconds per joint run, and the
sum of the N runs for independent.

Two more alignment scores per pair, over *every* pair (no yaw is picked, so nothing is set aside):
both read a cost curve over the relative yaw of the two meshes and give how much worse "no
relative rotation" is than the best relative yaw, in units of a random one (0 aligned, 1 on
average for unrelated yaws; :func:`a3d_mesh.metrics.alignment.yaw_excess`):

* ``shared_yaw``: the two template fits' curves, summed at a common yaw (the class frame);
* ``overlay``: the two meshes directly, one turned onto the other (shared shape and frame, no
  template). What a faithful aligned pair of two families scores there is not 0 (a chair and a
  bench overlay best turned); the per-set table gives the templates' own score as that floor.

A third row, ``independent-crossed``, pairs the independent runs across seeds (object i of seed
s with object j of the next seed; :func:`crossed_records`): single runs with one seed land at that
seed's yaw whatever the prompt, so the same-seed baseline is partly aligned by construction.

Aggregates are over (set, seed) units: the mean and sample standard deviation of each unit's mean.

Run (the real benchmark; ~N x 10 min per set and seed on a 2-core CPU with the toy preset):

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/alignment.py --preset toy --seeds 2 --resume-safe --write

Cheap checks: ``--dry-meshes`` replaces the runs by procedural meshes at known yaws (joint: one
common yaw plus a few degrees of noise; independent: uniform random yaws), written as GLB run
folders exactly like the CLI's, so the whole measurement and table path runs in seconds:

    .venv/bin/python benchmarks/alignment.py --dry-meshes --sets chair-bench chair-table --seeds 1
    .venv/bin/python benchmarks/alignment.py --preset toy --sets chair-bench --seeds 1 \\
        --budget coarse.steps=20 refine.steps=10 --out runs/bench-alignment-smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from a3d_mesh.metrics.alignment import (TemplateFit, classify, overlay_reference, overlay_score,  # noqa: E402
                                        pair_alignment, shared_yaw_score)
from a3d_mesh.toy.shapes import FAMILIES  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from alignment_report import (CROSSED, MODES, aggregate, format_table, paired_line, sign_test,  # noqa: E402,F401
                              unit_summary)

SETS: dict[str, tuple[str, ...]] = {
    "chair-bench": ("a red chair", "a blue bench"),
    "chair-stool": ("a green chair", "a yellow stool"),
    "table-bench": ("a purple table", "a red bench"),
    "chair-table": ("a blue chair", "a green table"),
    "chair-stool-table": ("a yellow chair", "a red stool", "a blue table"),
}
_FIT_FIELDS = [f.name for f in dataclasses.fields(TemplateFit)]


def family_of(prompt: str) -> str:
    """The toy family a prompt names (exactly one of ``FAMILIES`` among its words)."""
    found = [f for f in FAMILIES if f in prompt.lower().split()]
    if len(found) != 1:
        raise ValueError(f"prompt {prompt!r} must name exactly one of {', '.join(FAMILIES)}")
    return found[0]


def step_overrides(preset: str, budget: list[str], n: int) -> list[str]:
    """Overrides for a run of ``n`` prompts: ``budget`` with coarse/refine steps set to ``n`` x the
    per-object budget (see the module docstring); ensures a GLB is exported (what is measured)."""
    from a3d_mesh.config import load_config

    cfg = load_config(preset, budget)
    rest = [o for o in budget if o.split("=", 1)[0].strip() not in ("coarse.steps", "refine.steps")]
    out = rest + [f"coarse.steps={n * cfg.coarse.steps}", f"refine.steps={n * cfg.refine.steps}"]
    if "glb" not in cfg.export.formats:
        out.append(f"export.formats={','.join(cfg.export.formats + ['glb'])}")
    return out


def write_prompts(path: Path, prompts: tuple[str, ...]) -> None:
    """``name: prompt`` lines, named by family so that export/<family>.glb is each object."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{family_of(p)}: {p}\n" for p in prompts), encoding="utf-8")


def cli_run(run_dir: Path, prompts: tuple[str, ...], preset: str, seed: int, overrides: list[str],
            resume_safe: bool, log: Path, threads: int = 0) -> dict:
    """One ``a3d-mesh run`` (skipped under ``resume_safe`` when its manifest exists); its timing record."""
    timing = run_dir / "bench-timing.json"
    if resume_safe and (run_dir / "manifest.json").exists() and timing.exists():
        return json.loads(timing.read_text(encoding="utf-8"))
    pfile = run_dir.parent / f"{run_dir.name}.prompts.txt"
    write_prompts(pfile, prompts)
    resuming = resume_safe and (run_dir / "config.yaml").exists()  # an interrupted run: continue it
    cmd = [sys.executable, "-m", "a3d_mesh_cli.main", "run", str(pfile), "--out", str(run_dir), "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads)) if threads else None
    cmd += ["--resume"] if resuming else ["--preset", preset, "--seed", str(seed), *overrides]
    t0 = time.perf_counter()
    run_log = run_dir.parent / f"{run_dir.name}.log"  # one log per run: parallel runs must not interleave
    with run_log.open("w", encoding="utf-8") as fh:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"$ {shlex.join(cmd)}\n{run_log.read_text(encoding='utf-8')}")
    rec = {"wall_s": time.perf_counter() - t0, "rc": rc, "resumed": resuming, "command": shlex.join(cmd)}
    if rc == 0:
        timing.write_text(json.dumps(rec, indent=2) + "\n", encoding="utf-8")
    return rec


def dry_run(run_dir: Path, prompts: tuple[str, ...], yaws: list[float], seed: int) -> dict:
    """A run folder like the CLI's from procedural meshes at ``yaws`` (deg), one set transform
    (ground at y = 0, 1 m tall) as export applies, GLBs written with trimesh."""
    import trimesh

    from a3d_mesh.toy.shapes import rotate_yaw, sample_object

    g = torch.Generator().manual_seed(seed)
    objs = [sample_object(family_of(p), g) for p in prompts]
    meshes = [(o.family, rotate_yaw(o.verts, y), o.faces) for o, y in zip(objs, yaws)]
    lo = min(float(v[:, 1].min()) for _, v, _ in meshes)
    hi = max(float(v[:, 1].max()) for _, v, _ in meshes)
    (run_dir / "export").mkdir(parents=True, exist_ok=True)
    assets = []
    for (name, v, f), p in zip(meshes, prompts):
        v = (v - torch.tensor([0.0, lo, 0.0])) / (hi - lo)
        trimesh.Trimesh(v.numpy(), f.numpy(), process=False).export(run_dir / "export" / f"{name}.glb")
        assets.append({"name": name, "prompt": p, "kind": "object", "files": {"glb": f"{name}.glb"}})
    (run_dir / "manifest.json").write_text(json.dumps({"assets": assets, "dry_yaws": yaws}, indent=2), encoding="utf-8")
    return {"wall_s": 0.0, "rc": 0, "resumed": False, "command": "dry"}


def measure_run(run_dir: Path) -> list[dict]:
    """Per object mesh of a finished run: fitted family, correctness, fidelity, the prompt
    family's fit (a dict of ``TemplateFit`` fields, with its yaw curve) and the GLB's path."""
    from a3d_mesh.meshio import load_mesh

    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    out = []
    for a in manifest["assets"]:
        if a.get("kind", "object") != "object":
            continue
        fam = family_of(a["prompt"])
        glb = run_dir / "export" / a["files"]["glb"]
        v, f = load_mesh(glb)
        c = classify(v, f)
        fit = c.fits[fam]
        out.append({"name": a["name"], "prompt": a["prompt"], "family": fam, "fitted": c.family,
                    "correct": c.family == fam, "fidelity": fit.chamfer, "distances": c.distances,
                    "fit": fit.to_dict(with_curve=True), "faces": int(f.shape[0]), "glb": str(glb)})
    return out


def pairs_of(meshes: list[dict]) -> list[dict]:
    """Every pair of a set's meshes: :func:`pair_alignment` of their prompt-family fits, the
    ``shared_yaw`` score of their curves and the ``overlay`` score of the meshes (NaN where a mesh
    record has no curve or no GLB) with the templates' own ``overlay_reference``."""
    from a3d_mesh.meshio import load_mesh

    fits = [TemplateFit(**{"yaws_deg": [], "curve": [], **{k: m["fit"][k] for k in _FIT_FIELDS if k in m["fit"]}})
            for m in meshes]
    geo = [load_mesh(Path(m["glb"])) if "glb" in m else None for m in meshes]
    out = []
    for i in range(len(fits)):
        for j in range(i + 1, len(fits)):
            fa, fb = meshes[i]["family"], meshes[j]["family"]
            both = geo[i] is not None and geo[j] is not None
            out.append({"a": meshes[i]["name"], "b": meshes[j]["name"],
                        "both_correct": meshes[i]["correct"] and meshes[j]["correct"],
                        **pair_alignment(fits[i], fits[j]), "shared_yaw": shared_yaw_score(fits[i], fits[j]),
                        "overlay": overlay_score(*geo[i], fa, *geo[j], fb) if both else math.nan,
                        "overlay_reference": overlay_reference(fa, fb)})
    return out


def crossed_records(records: list[dict]) -> list[dict]:
    """The independent runs paired across seeds: for each set and seed s, every pair (i, j) of its
    prompts with object i from seed s and object j from the next seed run (cyclically), so no pair
    shares a start blob or a camera sequence. Same-seed single runs land at the seed's yaw whatever
    the prompt (RESULTS.md, sixth run), so the same-seed baseline is partly aligned by
    construction; this one is not. Fewer than two seeds: none. Each record keeps seed s's meshes
    (fidelity, accuracy and time are the independent ones) and :func:`pairs_of` its crossed pairs."""
    indep = {(r["set"], r["seed"]): r for r in records if r["mode"] == "independent"}
    seeds = sorted({s for _, s in indep})
    if len(seeds) < 2:
        return []
    out = []
    for (name, s), rec in indep.items():
        nxt = indep.get((name, seeds[(seeds.index(s) + 1) % len(seeds)]))
        here = {m["family"]: m for m in rec["meshes"]}
        there = {m["family"]: m for m in nxt["meshes"]} if nxt else {}
        fams = [family_of(p) for p in SETS[name]] if name in SETS else list(here)
        pairs = [p for a, b in itertools.combinations(fams, 2) if a in here and b in there
                 for p in pairs_of([here[a], there[b]])]
        out.append({"set": name, "seed": s, "mode": CROSSED, "meshes": rec["meshes"], "pairs": pairs,
                    "time_s": rec["time_s"], "failed": rec["failed"]})
    return out


def plan_runs(args: argparse.Namespace) -> list[tuple[Path, tuple[str, ...], int]]:
    """Every CLI run of the benchmark: (run folder, prompts, seed), joint and independent."""
    out = []
    for name in args.sets:
        for seed in range(args.seeds):
            base = args.out / name / f"seed{seed}"
            out.append((base / "joint", SETS[name], seed))
            out += [(base / f"indep-{family_of(p)}", (p,), seed) for p in SETS[name]]
    return out


def run_all(args: argparse.Namespace, log: Path) -> dict[Path, dict]:
    """Run every planned run, ``args.jobs`` at a time with one thread each (on a small CPU two
    one-thread runs finish sooner than two two-thread runs in turn); their timing records by run
    folder. Measuring comes after, from the folders and these records, so a failed run is counted
    once, with the time it took, and not run again."""
    runs = plan_runs(args)
    threads = 1 if args.jobs > 1 else 0

    def one(r: tuple[Path, tuple[str, ...], int]) -> tuple[Path, dict]:
        run_dir, ps, seed = r
        rec = cli_run(run_dir, ps, args.preset, seed, step_overrides(args.preset, args.budget, len(ps)), True, log,
                      threads)
        print(f"  ran {run_dir.relative_to(args.out)}: rc {rec['rc']}, {rec['wall_s']:.0f} s", flush=True)
        return run_dir, rec

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        return dict(pool.map(one, runs))


def bench_set(name: str, prompts: tuple[str, ...], seed: int, args: argparse.Namespace, log: Path,
              done: dict[Path, dict] | None = None) -> list[dict]:
    """The joint and the independent records of one set at one seed (runs in ``done``, from
    :func:`run_all`, are not run again)."""
    base = args.out / name / f"seed{seed}"
    recs = []
    for mode in MODES:
        runs = [(base / "joint", prompts)] if mode == "joint" else [(base / f"indep-{family_of(p)}", (p,)) for p in prompts]
        meshes, time_s, failed = [], 0.0, 0
        for i, (run_dir, ps) in enumerate(runs):
            if args.dry_meshes:  # joint: one common yaw + noise; independent: each its own yaw
                g = torch.Generator().manual_seed(1000 * seed + zlib.crc32(name.encode()) % 1000 + i)
                common = float(torch.rand((), generator=g)) * 360
                yaws = ([common + float(torch.randn((), generator=g)) * args.dry_noise for _ in ps] if mode == "joint"
                        else [float(torch.rand((), generator=g)) * 360 for _ in ps])
                t = dry_run(run_dir, ps, yaws, seed)
            elif done and run_dir in done:
                t = done[run_dir]
            else:
                t = cli_run(run_dir, ps, args.preset, seed, step_overrides(args.preset, args.budget, len(ps)),
                            args.resume_safe, log)
            time_s += t["wall_s"]
            if t["rc"] != 0:
                failed += 1
                print(f"  {name} seed {seed} {run_dir.name}: run failed (rc {t['rc']}); see {log}", flush=True)
                continue
            meshes += measure_run(run_dir)
        recs.append({"set": name, "seed": seed, "mode": mode, "meshes": meshes, "pairs": pairs_of(meshes),
                     "time_s": time_s, "failed": failed})
        print(f"  {name} seed {seed} {mode}: {unit_summary(recs[-1])}", flush=True)
    return recs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="toy", help="preset of every run (configs/*.yaml or a YAML file)")
    ap.add_argument("--sets", nargs="+", choices=sorted(SETS), default=list(SETS), help="prompt sets to run")
    ap.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1, each used by the joint and the independent runs")
    ap.add_argument("--budget", nargs="*", default=[], metavar="KEY=VALUE",
                    help="per-object overrides; coarse.steps / refine.steps are multiplied by N for a joint run")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-alignment", help="folder for runs and results")
    ap.add_argument("--resume-safe", action="store_true", help="skip runs whose manifest exists; continue interrupted ones")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (each then uses one thread)")
    ap.add_argument("--dry-meshes", action="store_true", help="procedural meshes at known yaws instead of runs")
    ap.add_argument("--dry-noise", type=float, default=3.0, help="--dry-meshes: joint yaw noise (deg, std)")
    ap.add_argument("--write", action="store_true", help="append the table to --results-md")
    ap.add_argument("--results-md", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "runs.log"
    done = run_all(args, log) if args.jobs > 1 and not args.dry_meshes else None
    records = []
    for name in args.sets:
        for seed in range(args.seeds):
            records += bench_set(name, SETS[name], seed, args, log, done)
    records += crossed_records(records)
    (args.out / "results.json").write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
    table = format_table(records)
    print(table)
    if args.write:
        cmd = "python benchmarks/alignment.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        head = (f"\n## Alignment: joint A3D vs independent runs ({datetime.date.today().isoformat()})\n\n"
                f"`{cmd}` ({'procedural dry meshes, not runs' if args.dry_meshes else f'preset {args.preset}'}; "
                f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads)\n\n")
        with args.results_md.open("a", encoding="utf-8") as fh:
            fh.write(head + table)
    return table


if __name__ == "__main__":
    main()
