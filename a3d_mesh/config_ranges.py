"""Range checks of a run configuration: one table, one row per key (what the types cannot say).

Each row is ``(dotted key, test of the value, what the value must be)``; :func:`first_problem`
returns the one-line message of the first failing row, naming the key, the allowed range and the
value. The bounds come from what the code downstream needs (divisors, allocator sizes, seeds) and
are cited next to each. Pure data checks: no tensors, nothing written.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

# Bounds of the range checks. Steps: far beyond any real schedule, small enough that a typo
# (1e23 written as an int) is caught before a run folder exists.
MAX_STEPS = 10_000_000
# torch generators take any seed in 0..2**64-1; the stages seed with seed, seed + 1 and seed + 2.
MAX_SEED = 2**63 - 1
MAX_RESOLUTION = 4096  # renders and SDS images, pixels per side
TEXTURE_SIZES = (16, 16384)  # export textures, texels per side (16384^2 RGB float32 is 3 GiB)
MAX_FACES = 2**31 - 1  # the decimator's face budget is a C int
# Cleanup's decimation needs a budget of at least a tetrahedron (a3d_mesh/export/cleanup.py).
MIN_FACES = 4
# tiny-cuda-nn's grid encoding: features per level it compiles, and a finest level that stays a
# table of sane size (the reference grid's finest level has 4096 vertices per axis).
GRID_FEATURES = (1, 2, 4, 8)
MAX_GRID_RESOLUTION = 65536
# The export formats a3d_mesh.export writes (glb: glTF 2.0 binary; obj: OBJ + MTL + PNG; fbx: via
# Blender; usdz: via usd-core), in the order a manifest lists them.
EXPORT_FORMATS = ("glb", "obj", "fbx", "usdz")


def parse_seed(value: object) -> int | None:
    """A seed written by a person (a flag's text, or a YAML value): a whole number in
    ``0..MAX_SEED``, else None. YAML's ``yes`` (True) is no seed though ``True == 1``, and
    ``isdigit`` alone would take '²'."""
    if isinstance(value, bool):
        return None
    s = str(value).strip()
    return int(s) if s.isascii() and s.isdigit() and int(s) <= MAX_SEED else None


def format_problem(formats: list[str] | tuple[str, ...], where: str) -> str | None:
    """The one-line problem of a list of export format names (``where``: the key or flag that gave
    it), or None when every name is known and there is at least one."""
    bad = [f for f in formats if f not in EXPORT_FORMATS]
    if bad or not formats:
        what = f"unknown format '{bad[0]}'" if bad else "no format given"
        return f"{where}: {what} (known: {', '.join(EXPORT_FORMATS)})"
    return None


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _ints(lo: int, hi: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, int) and lo <= v <= hi), f"a whole number in {lo}..{hi}"


def _at_least(lo: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: _num(v) and v >= lo), f"a finite number >= {lo:g}"


def _above(lo: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: _num(v) and v > lo), f"a finite number > {lo:g}"


def _between(lo: float, hi: float, closed: str = "[]") -> tuple[Callable[[Any], bool], str]:
    """``closed``: the bracket pair of the interval, e.g. ``"[)"`` for lo <= v < hi."""
    def ok(v: Any) -> bool:
        return _num(v) and (v >= lo if closed[0] == "[" else v > lo) and (v <= hi if closed[1] == "]" else v < hi)
    return ok, f"in {closed[0]}{lo:g}, {hi:g}{closed[1]}"


def _ordered(lo: float, hi: float) -> tuple[Callable[[Any], bool], str]:
    """A ``(low, high)`` range with low <= high, both inside the open interval (lo, hi)."""
    return ((lambda v: all(_num(x) for x in v) and lo < v[0] <= v[1] < hi),
            f"[low, high] with low <= high, within ({lo:g}, {hi:g})")


def _relative_distances(cam: Any) -> tuple[Callable[[Any], bool], str]:
    """``distance_range`` in units of ``1 / tan(fov / 2)``: every distance it gives with
    ``fov_range``, ``r / tan(fov / 2)``, inside (near, far)."""
    def ok(v: Any) -> bool:
        fov = cam.fov_range
        if not (all(_num(x) for x in (*v, *fov, cam.near, cam.far)) and 0 < v[0] <= v[1] and 0 < fov[0] <= fov[1] < 180):
            return False
        lo, hi = v[0] / math.tan(math.radians(fov[1]) / 2), v[1] / math.tan(math.radians(fov[0]) / 2)
        return cam.near < lo and hi < cam.far
    return ok, "[low, high] with 0 < low <= high, giving distances low / tan(fov / 2) within (camera.near, camera.far)"


def _ramp01() -> tuple[Callable[[Any], bool], str]:
    return (lambda r: all(_num(x) and 0.0 <= x <= 1.0 for x in (r.start, r.end))), "a schedule of values in [0, 1]"


def _checks(cfg: Any) -> list[tuple[str, Callable[[Any], bool], str]]:
    """One row per range fact: (dotted key, test of its value, what the value must be)."""
    cam = cfg.camera
    rows = [
        ("seed", *_ints(0, MAX_SEED)),
        ("bound", *_above(0)),
        ("checkpoint_every", *_ints(1, MAX_STEPS)),
        # Cameras: look_at's +Y up is undefined straight above or below (elevation +-90).
        ("camera.elevation_range", (lambda v: all(_num(x) for x in v) and -90 < v[0] <= v[1] < 90),
         "[low, high] with low <= high, within (-90, 90)"),
        ("camera.azimuth_range", (lambda v: all(_num(x) for x in v) and v[0] <= v[1]), "[low, high] with low <= high"),
        ("camera.fov_range", *_ordered(0, 180)),
        ("camera.near", *_above(0)),
        ("camera.far", *_above(cam.near if _num(cam.near) else 0)),
        ("camera.distance_range", *(_relative_distances(cam) if cam.relative_distance is True
                                     else _ordered(cam.near, cam.far))),
        ("camera.relative_distance", (lambda v: isinstance(v, bool)), "true or false"),
        ("camera.views_per_step", *_ints(1, 64)),  # spread views are 360 / n degrees apart
        ("camera.view_group", (lambda v: isinstance(v, int) and 0 <= v <= 64 and (
            v == 0 or (isinstance(cam.views_per_step, int) and cam.views_per_step % v == 0))),
         "0 (off) or a whole number that divides camera.views_per_step"),
        ("camera.eval_elevation", *_between(-90, 90, "()")),
        ("camera.eval_fov", *_between(0, 180, "()")),
        ("camera.eval_distance", *_between(cam.near, cam.far, "()")),
        ("sampling.p_corner_i", *_between(0, 1)),
        ("sampling.p_corner_j", *_between(0, 1)),
        ("sampling.p_interior", *_between(0, 1)),
        ("guidance.target_weight_mask", *_at_least(0)),
        ("guidance.target_weight_normal", *_at_least(0)),
        ("guidance.target_weight_depth", *_at_least(0)),
        ("coarse.samples_per_ray", *_ints(1, 4096)),  # the ray-march step is the cube's diagonal / n
        ("coarse.lr_grid", *_at_least(0)),
        ("coarse.lr_mlp", *_at_least(0)),
        ("coarse.blob_density", *_at_least(0)),
        ("coarse.blob_radius", *_above(0)),
        ("coarse.occupancy_resolution", *_ints(2, 512)),
        ("coarse.occupancy_every", *_ints(1, MAX_STEPS)),  # the grid updates when step % n == 0
        ("coarse.occupancy_threshold", *_at_least(0)),
        ("coarse.orientation_weight", (lambda r: all(_num(x) and x >= 0 for x in (r.start, r.end))),
         "a schedule of finite numbers >= 0"),
        ("coarse.opacity_weight", *_at_least(0)),
        ("coarse.min_opacity", *_between(0, 1, "[)")),
        ("coarse.min_opacity_weight", *_at_least(0)),
        ("coarse.albedo_only_prob", *_between(0, 1)),
        ("refine.tet_resolution", *_ints(8, 256)),
        ("refine.lr", *_at_least(0)),
        ("refine.lr_color", *_at_least(0)),
        ("refine.normal_consistency_weight", *_at_least(0)),
        ("refine.laplacian_weight", *_at_least(0)),
        ("refine.sdf_entropy_weight", *_at_least(0)),
        ("refine.init_threshold", (lambda v: v == "auto" or _num(v)), "'auto' or a finite number"),
        ("refine.init_opacity", *_between(0, 1, "()")),
        ("refine.init_steps", *_ints(0, MAX_STEPS)),
        ("refine.init_views", *_ints(1, 64)),  # orbit cameras, 360 / n degrees apart
        ("refine.min_opacity", *_between(0, 1, "[)")),
        ("refine.min_opacity_weight", *_at_least(0)),
        ("export.texture_size", *_ints(*TEXTURE_SIZES)),
        ("export.target_faces", (lambda v: v is None or MIN_FACES <= v <= MAX_FACES),
         f"empty (no budget) or a whole number in {MIN_FACES}..{MAX_FACES}"),
        ("export.height_m", *_above(0)),
        ("export.uv_timeout_s", *_above(0)),
        ("export.min_component_area", *_between(0, 1)),  # a fraction of the largest component's area
        ("preview.resolution", *_ints(8, MAX_RESOLUTION)),
        ("preview.views", *_ints(1, 64)),  # orbit cameras, 360 / n degrees apart
        # A transition runs from one object to the other: its first and last frames at least.
        ("preview.sweep_frames", *_ints(2, 1000)),
    ]
    for stage in ("coarse", "refine"):
        rows += [
            (f"{stage}.steps", *_ints(0, MAX_STEPS)),
            (f"{stage}.resolution", *_ints(8, MAX_RESOLUTION)),
            (f"{stage}.hidden", *_ints(1, 1024)),
            (f"{stage}.grid.n_levels", *_ints(1, 32)),
            (f"{stage}.grid.n_features_per_level", (lambda v: v in GRID_FEATURES), f"one of {list(GRID_FEATURES)}"),
            (f"{stage}.grid.log2_hashmap_size", *_ints(4, 24)),
            (f"{stage}.grid.base_resolution", *_ints(2, 4096)),
            (f"{stage}.grid.per_level_scale", *_between(1, 4)),
            (f"{stage}.grid", _grid_fits, "a grid whose finest level (base_resolution * per_level_scale ** "
                                          f"(n_levels - 1)) has at most {MAX_GRID_RESOLUTION} vertices per axis"),
            (f"{stage}.sds.guidance_scale", *_above(0)),
            (f"{stage}.sds.t_min", *_ramp01()),
            (f"{stage}.sds.t_max", *_ramp01()),
            (f"{stage}.sds.grad_clip", (lambda v: v is None or (_num(v) and v > 0)),
             "empty (no clipping) or a finite number > 0"),
            (f"{stage}.sds.resolution", *_ints(8, MAX_RESOLUTION)),
            (f"{stage}.sds.x0_std_rescale", *_between(0, 1)),  # a blend factor (guidance.mvdream.sds)
        ]
    return rows


def _grid_fits(g: Any) -> bool:
    return g.base_resolution * g.per_level_scale ** (g.n_levels - 1) <= MAX_GRID_RESOLUTION


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _show(value: Any) -> str:
    if hasattr(value, "to_data"):  # schedule ramps
        value = value.to_data()
    if dataclasses.is_dataclass(value):  # a whole sub-config: its numbers, not its type
        return ", ".join(f"{f.name}={getattr(value, f.name)!r}" for f in dataclasses.fields(value))
    text = repr(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"  # one readable line


def first_problem(cfg: Any) -> str | None:
    """The message of the first row of :func:`_checks` that ``cfg`` (a RunConfig) fails, or None."""
    for key, ok, requirement in _checks(cfg):
        value = _get(cfg, key)
        try:
            good = bool(ok(value))
        except (TypeError, ValueError, OverflowError):
            good = False
        if not good:
            return f"config key {key} must be {requirement}, got {_show(value)}"
    return None
