"""Fit the toy world's procedural templates to a mesh over yaw and scale; classify; compare yaws.

Frames: the mesh is in any frame with +Y up (a run's world frame, or an exported GLB in metres:
uniform scale and a translation do not matter, a tilt does). The template is
``a3d_mesh.toy.shapes.template(family)`` in its canonical frame (back rest on -Z). A fit says

    mesh  ~=  scale * rotate_yaw(template, yaw_deg) + translation

with ``rotate_yaw`` of :mod:`a3d_mesh.toy.shapes` (about +Y). How it is found:

1. Normalise away translation and scale with exact surface moments (area-weighted centroid, RMS
   radius; :func:`a3d_mesh.metrics.surface.surface_moments`): both move with the mesh under
   ``x -> s R x + t``, so after normalising only the yaw is left to search (and residual scale /
   offset, which a generated mesh has when parts are missing or extra).
2. Chamfer distance against the rotated template on a coarse yaw grid over the full circle (the
   *curve*), at the moment-normalised scale.
3. Refine around the best yaw: a fine yaw x scale grid, then a few translation (ICP-style) steps.

Distances (``chamfer``, the curve) are in *template units*: the mesh is scaled to the template's
RMS radius before comparing, so they are comparable between meshes of any size and between runs
(the template is about 1.8 units tall; see :mod:`a3d_mesh.toy.shapes`).

Yaw ambiguity, two kinds, both reported rather than hidden:

* exact symmetry: a family of rotational symmetry order ``k`` (``SYMMETRY_ORDER``) has a yaw only
  modulo ``period = 360 / k``; ``yaw_deg`` is reduced to ``[0, period)`` and the curve is folded
  modulo the period before looking for minima;
* near-ambiguity seen in the data: another local minimum of the folded curve more than
  ``min_separation_deg`` away (circularly, modulo the period) whose distance is within ``tol`` of
  the best one (``curve_other <= (1 + tol) * curve_best``); e.g. a blobby chair whose back is
  barely there fits almost as well turned by 180 deg. Those yaws are ``alternatives``.

Pairs: :func:`pair_alignment` compares the two best yaws (so an ambiguous fit makes the pair
ambiguous). :func:`shared_yaw_score` and :func:`overlay_score` pick no yaw: each reads a whole
cost curve over the relative yaw of the pair (the template curves at a common yaw; the two
meshes overlaid directly) and scores "no relative rotation" against a random one
(:func:`yaw_excess`: 0 aligned, 1 on average for unrelated yaws), so every pair gets a number.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field

import torch

from a3d_mesh.metrics.surface import chamfer_distance, sample_surface, surface_moments
from a3d_mesh.toy.shapes import FAMILIES, SYMMETRY_ORDER, template, yaw_matrix


@dataclass
class TemplateFit:
    """The best pose of one family's template on a mesh (see the module docstring for the frame).

    ``yaw_deg`` in ``[0, period_deg)``; ``translation`` [3] in the mesh's units; ``chamfer`` in
    template units after refinement; ``yaws_deg`` / ``curve``: the coarse grid over ``[0, 360)`` and
    the chamfer at each yaw (moment-normalised scale, no refinement); ``alternatives``: yaws
    (``[0, period)``) of near-ambiguous other minima; ``second_ratio``: the best other local
    minimum of the folded curve over the best (``inf`` when the folded curve has a single minimum).
    """

    family: str
    yaw_deg: float
    period_deg: float
    scale: float
    translation: tuple[float, float, float]
    chamfer: float
    yaws_deg: list[float] = field(repr=False)
    curve: list[float] = field(repr=False)
    alternatives: list[float]
    second_ratio: float

    @property
    def ambiguous(self) -> bool:
        """True when the data leave another yaw (beyond the exact symmetry) nearly as good."""
        return bool(self.alternatives)

    def place(self, verts: torch.Tensor) -> torch.Tensor:
        """Template-frame vertices [V,3] -> the mesh's frame: ``scale * R(yaw) v + translation``."""
        r = yaw_matrix(self.yaw_deg).to(verts)
        return self.scale * verts @ r.T + torch.tensor(self.translation).to(verts)

    def to_dict(self, with_curve: bool = False) -> dict:
        d = asdict(self)
        d["ambiguous"] = self.ambiguous
        if not with_curve:
            d.pop("yaws_deg"), d.pop("curve")
        return d


@dataclass
class Classification:
    """``family``: the template nearest by fitted chamfer; ``distances``: every family's; ``fits``."""

    family: str
    distances: dict[str, float]
    fits: dict[str, TemplateFit]

    @property
    def margin(self) -> float:
        """Second-nearest distance over the nearest (>= 1; near 1 means a toss-up)."""
        d = sorted(self.distances.values())
        return d[1] / max(d[0], 1e-12) if len(d) > 1 else math.inf


def period_deg(family: str) -> float:
    """The yaw period of ``family``: ``360 / SYMMETRY_ORDER[family]``."""
    if family not in SYMMETRY_ORDER:
        raise ValueError(f"unknown toy family '{family}' (known: {', '.join(FAMILIES)})")
    return 360.0 / SYMMETRY_ORDER[family]


@functools.lru_cache(maxsize=32)
def _template_points(family: str, n: int, seed: int) -> tuple[torch.Tensor, float]:
    """The template's surface samples [n,3] centred on its centroid, and its RMS radius."""
    t = template(family)
    c, rms = surface_moments(t.verts, t.faces)
    return sample_surface(t.verts, t.faces, n, seed) - c, rms


def _rotated(points: torch.Tensor, yaws: torch.Tensor, scales: torch.Tensor | None = None) -> torch.Tensor:
    """``points`` [M,3] turned by each yaw [K] (and scaled by [K]): [K,M,3]."""
    r = torch.stack([yaw_matrix(float(a)) for a in yaws]).to(points)  # [K,3,3]
    out = torch.einsum("kij,mj->kmi", r, points)
    return out if scales is None else out * scales.to(points)[:, None, None]


def _batched_chamfer(x: torch.Tensor, ys: torch.Tensor, batch: int = 12) -> torch.Tensor:
    """Chamfer of ``x`` [N,3] against each of ``ys`` [K,M,3]: [K], a few hypotheses at a time
    (memory stays at ``batch * 1024 * M`` distances)."""
    out = [chamfer_distance(x.expand(min(batch, ys.shape[0] - i), -1, -1), ys[i:i + batch])
           for i in range(0, ys.shape[0], batch)]
    return torch.cat(out)


def _circ(a: float, period: float) -> float:
    """Circular distance of an angle difference to 0 modulo ``period``: in ``[0, period / 2]``."""
    a = math.fmod(a, period)
    a = a + period if a < 0 else a
    return min(a, period - a)


def fit_template(verts: torch.Tensor, faces: torch.Tensor, family: str, n_points: int = 600,
                 n_final: int = 2000, yaw_step_deg: float = 5.0, tol: float = 0.1, min_separation_deg: float = 30.0,
                 seed: int = 0) -> TemplateFit:
    """Best yaw, scale and translation of ``family``'s template on the mesh, with the yaw curve.

    Args:
        verts, faces: the mesh [V,3] / [F,3] (+Y up, any units and offset).
        family: one of ``FAMILIES``.
        n_points: surface samples per shape (the mesh and the template) for the search.
        n_final: samples per shape for the reported ``chamfer`` (more: a lower sampling floor,
            about 0.02 template units at 2000, for two samplings of one surface).
        yaw_step_deg: coarse grid step; must divide the family's period (5 deg does for all).
        tol, min_separation_deg: the near-ambiguity test of the module docstring.
        seed: sampling seed (fits are deterministic for a given seed).
    """
    period = period_deg(family)
    steps_per_period = round(period / yaw_step_deg)
    if abs(steps_per_period * yaw_step_deg - period) > 1e-6:
        raise ValueError(f"yaw_step_deg={yaw_step_deg} does not divide the {family} period of {period} deg")
    n_final = max(n_final, n_points)
    y_all, r_t = _template_points(family, n_final, seed)
    c_x, r_x = surface_moments(verts, faces)
    x_all = (sample_surface(verts.float(), faces, n_final, seed + 1) - c_x.float()) * (r_t / r_x)  # template units
    # The search uses the first n_points of the (i.i.d.) samples: a smaller, equally unbiased draw.
    x, y = x_all[:n_points], y_all[:n_points]

    # Coarse curve over the full circle (the data, not just one period: it shows the symmetry).
    k = steps_per_period * SYMMETRY_ORDER[family]
    yaws = torch.arange(k, dtype=torch.float64) * yaw_step_deg
    curve = _batched_chamfer(x, _rotated(y, yaws))
    folded = curve.view(SYMMETRY_ORDER[family], steps_per_period).amin(0)  # [steps_per_period]
    i_best = int(folded.argmin())
    best = float(folded[i_best])
    alternatives, others = [], []
    for i in range(steps_per_period):
        lo, hi = folded[(i - 1) % steps_per_period], folded[(i + 1) % steps_per_period]
        if i == i_best or not (folded[i] <= lo and folded[i] <= hi):
            continue
        if _circ((i - i_best) * yaw_step_deg, period) <= min_separation_deg:
            continue
        others.append(float(folded[i]))
        if float(folded[i]) <= (1 + tol) * best:
            alternatives.append(i * yaw_step_deg)
    second_ratio = min(others) / max(best, 1e-12) if others else math.inf

    # Refine yaw x scale around the best coarse yaw, then the offset.
    fine = torch.arange(-yaw_step_deg, yaw_step_deg + 1e-9, 1.0, dtype=torch.float64) + i_best * yaw_step_deg
    scales = torch.tensor([0.9, 0.95, 1.0, 1.05, 1.1])
    fy, fs = torch.meshgrid(fine, scales.double(), indexing="ij")
    d = _batched_chamfer(x, _rotated(y, fy.flatten(), fs.flatten().float()))
    j = int(d.argmin())
    yaw, sigma, dist = float(fy.flatten()[j]), float(fs.flatten()[j]), float(d[j])
    model = _rotated(y, torch.tensor([yaw]), torch.tensor([sigma]))[0]
    tau = torch.zeros(3)
    for _ in range(4):  # ICP-style mean offset, both directions; kept only while it helps
        dxy = torch.cdist(x, model + tau)
        step = 0.5 * ((x - (model + tau)[dxy.argmin(1)]).mean(0) + (x[dxy.argmin(0)] - (model + tau)).mean(0))
        new = float(chamfer_distance(x, model + tau + step))
        if new >= dist:
            break
        tau, dist = tau + step, new
    placed = _rotated(y_all, torch.tensor([yaw]), torch.tensor([sigma]))[0] + tau
    dist = float(chamfer_distance(x_all, placed))

    yaw = yaw % period
    # Back to the mesh frame: x_mesh = c_x + (r_x / r_t) * (sigma R (v - c_t) + tau), c_t the template centroid.
    t = template(family)
    c_t, _ = surface_moments(t.verts, t.faces)
    ratio = r_x / r_t
    scale = ratio * sigma
    trans = c_x.double() + ratio * tau.double() - scale * (yaw_matrix(yaw).double() @ c_t.double())
    return TemplateFit(family=family, yaw_deg=yaw, period_deg=period, scale=scale,
                       translation=tuple(float(v) for v in trans), chamfer=dist, yaws_deg=yaws.tolist(),
                       curve=curve.tolist(), alternatives=alternatives, second_ratio=second_ratio)


def classify(verts: torch.Tensor, faces: torch.Tensor, families: tuple[str, ...] = FAMILIES,
             **fit_kwargs: object) -> Classification:
    """Fit every family's template (:func:`fit_template`, same kwargs) and pick the nearest."""
    fits = {f: fit_template(verts, faces, f, **fit_kwargs) for f in families}
    distances = {f: r.chamfer for f, r in fits.items()}
    return Classification(min(distances, key=distances.__getitem__), distances, fits)


def common_period(fam_a: str, fam_b: str) -> float:
    """The period (deg) modulo which the relative yaw of a ``fam_a`` and a ``fam_b`` is defined.

    Object a's orientation is the set ``yaw_a + P_a Z`` (``P = 360 / order``), b's ``yaw_b + P_b Z``,
    so their difference is known only up to ``P_a Z + P_b Z = gcd(P_a, P_b) Z``, i.e.
    ``360 / lcm(order_a, order_b)``: chair-bench 360, chair-table 180, chair-stool 120,
    stool-table 60, table-table 180.
    """
    period_deg(fam_a), period_deg(fam_b)  # validates both names
    return 360.0 / math.lcm(SYMMETRY_ORDER[fam_a], SYMMETRY_ORDER[fam_b])


def relative_yaw_error(yaw_a: float, fam_a: str, yaw_b: float, fam_b: str) -> float:
    """Smallest angle (deg, in ``[0, P / 2]``) between two objects' orientations, modulo the
    symmetry common to both.

    ``yaw_*`` are fitted yaws (``mesh ~ R(yaw) template``) of two objects of one set. Every object
    of an aligned set sits in one canonical frame turned by the set's common yaw, so the truth is
    ``yaw_a - yaw_b = 0``. What is reduced: the difference ``yaw_a - yaw_b`` modulo
    ``P = common_period(fam_a, fam_b)`` (each yaw is only defined modulo its own family's period,
    so the difference only modulo their gcd), then folded to its distance from 0. E.g. chair vs
    table: the table looks the same turned by 180, so a chair at 0 and a table at 180 are aligned
    (P = 180); stool vs chair P = 120; stool vs table P = 60 (so chance level is far lower there:
    for independent uniform yaws the error is uniform on ``[0, P / 2]``, mean ``P / 4``).
    """
    return _circ(yaw_a - yaw_b, common_period(fam_a, fam_b))


def pair_alignment(a: TemplateFit, b: TemplateFit) -> dict:
    """Relative yaw of two fits with the ambiguity spelled out.

    Returns ``{"error_deg": at the best yaws, "period_deg": common period, "chance_deg": P / 4
    (mean error of independent uniform yaws), "ambiguous": either fit has alternatives,
    "error_min_deg": the smallest error over every candidate yaw pair (best and alternatives;
    equals error_deg when unambiguous)}``.
    """
    p = common_period(a.family, b.family)
    err = relative_yaw_error(a.yaw_deg, a.family, b.yaw_deg, b.family)
    cands = [relative_yaw_error(ya, a.family, yb, b.family)
             for ya in [a.yaw_deg] + a.alternatives for yb in [b.yaw_deg] + b.alternatives]
    return {"error_deg": err, "period_deg": p, "chance_deg": p / 4, "ambiguous": a.ambiguous or b.ambiguous,
            "error_min_deg": min(cands)}


# --- Chance-normalised alignment scores (every pair, no yaw picked) ---------------------------------
#
# ``pair_alignment`` compares two best yaws, so a pair is only as good as its least certain fit
# and near-ambiguous fits have to be set aside. The scores below never pick a yaw: each reads a
# whole cost curve over the relative yaw ``delta`` of b against a and asks how good ``delta = 0``
# (the aligned answer) is compared with a random relative yaw. An ambiguous fit then counts for
# what it is (a curve with several low points), not for a guess.


def yaw_excess(curve: torch.Tensor | list[float], period_deg: float) -> float:
    """How much worse relative yaw 0 is than the best relative yaw, in units of a random one.

    Args:
        curve: [K] a cost (lower is better) at relative yaws ``k * 360 / K``, ``k = 0..K-1`` (the
            full circle). ``360 / K`` must divide ``period_deg``.
        period_deg: the symmetry of the pair (:func:`common_period`); the curve is folded modulo it
            (the minimum over its copies) first.

    Returns ``(c(0) - min c) / (mean c - min c)`` on the folded curve ``c``: 0 when no rotation is
    the best overlay; 1 on average when the true relative yaw is uniform on the circle (the mean
    of the score over every grid shift of a curve is exactly 1); larger when 0 is worse than
    average. NaN for an empty or flat curve (no yaw signal at all).
    """
    c = torch.as_tensor(curve, dtype=torch.float64)
    if c.numel() == 0:
        return math.nan
    step = 360.0 / c.numel()
    per = round(period_deg / step)
    if per < 1 or abs(per * step - period_deg) > 1e-6 or c.numel() % per:
        raise ValueError(f"a curve of {c.numel()} yaws cannot be folded modulo {period_deg} deg")
    c = c.view(-1, per).amin(0)
    lo, depth = float(c.min()), float(c.mean() - c.min())
    if not depth > 1e-12 * max(abs(lo), 1.0):
        return math.nan
    return (float(c[0]) - lo) / depth


def shared_yaw_curve(a: TemplateFit, b: TemplateFit) -> torch.Tensor:
    """The template cost of a pair with b turned by ``delta`` against a: [K], ``delta = k * 360 / K``.

    ``C(delta) = min_y curve_a(y) + curve_b(y + delta)`` over the two fits' coarse curves (same
    grid, the full circle). It is lowest at ``delta = yaw_b - yaw_a``; an aligned pair (one common
    yaw) has its minimum at 0. Empty when either fit has no curve.
    """
    ca, cb = torch.tensor(a.curve, dtype=torch.float64), torch.tensor(b.curve, dtype=torch.float64)
    if ca.numel() == 0 or cb.numel() == 0:
        return torch.empty(0, dtype=torch.float64)
    if ca.numel() != cb.numel():
        raise ValueError(f"fits on different yaw grids ({ca.numel()} vs {cb.numel()} yaws)")
    return torch.stack([(ca + cb.roll(-d)).min() for d in range(ca.numel())])  # roll(-d)[y] = cb[y + d]


def shared_yaw_score(a: TemplateFit, b: TemplateFit) -> float:
    """:func:`yaw_excess` of :func:`shared_yaw_curve`, modulo the pair's common period: 0 when the
    two meshes fit their templates best at one common yaw, ~1 for unrelated yaws. NaN without curves."""
    return yaw_excess(shared_yaw_curve(a, b), common_period(a.family, b.family))


def normalised_samples(verts: torch.Tensor, faces: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` surface samples [n,3] of the mesh, centred on its area centroid and divided by its RMS
    radius (:func:`a3d_mesh.metrics.surface.surface_moments`): invariant to the mesh's scale and
    offset, turning with it. The frame of :func:`overlay_curve` (and of the benchmark's top views)."""
    c, r = surface_moments(verts, faces)
    return (sample_surface(verts.float(), faces, n, seed) - c.float()) / r


def overlay_curve(verts_a: torch.Tensor, faces_a: torch.Tensor, verts_b: torch.Tensor, faces_b: torch.Tensor,
                  n_points: int = 600, yaw_step_deg: float = 5.0, seed: int = 0) -> torch.Tensor:
    """Chamfer distance of mesh a turned by ``delta`` onto mesh b, both moment-normalised: [K].

    Each mesh (+Y up, any units and offset) is centred on its area centroid and scaled to unit RMS
    radius (:func:`a3d_mesh.metrics.surface.surface_moments`), so the curve is invariant to the
    meshes' scales and offsets and in units of their RMS radius. ``delta = k * yaw_step_deg`` over
    the full circle; for two copies of one shape at yaws ``y_a`` and ``y_b`` the minimum is at
    ``delta = y_b - y_a``. No template is involved: the curve measures shared shape and frame.
    """
    yaws = torch.arange(round(360.0 / yaw_step_deg), dtype=torch.float64) * yaw_step_deg
    return _batched_chamfer(normalised_samples(verts_b, faces_b, n_points, seed + 1),
                            _rotated(normalised_samples(verts_a, faces_a, n_points, seed), yaws)).double()


def overlay_score(verts_a: torch.Tensor, faces_a: torch.Tensor, fam_a: str, verts_b: torch.Tensor,
                  faces_b: torch.Tensor, fam_b: str, **curve_kwargs: object) -> float:
    """:func:`yaw_excess` of :func:`overlay_curve` modulo ``common_period(fam_a, fam_b)``: 0 when
    the meshes overlay best as they stand, ~1 for unrelated yaws.

    What a faithful, aligned pair scores depends on the families: two templates of one family
    score 0, but a chair and a bench overlay best turned against each other (their seats and
    backs differ); :func:`overlay_reference` gives that floor.
    """
    return yaw_excess(overlay_curve(verts_a, faces_a, verts_b, faces_b, **curve_kwargs), common_period(fam_a, fam_b))


@functools.lru_cache(maxsize=32)
def overlay_reference(fam_a: str, fam_b: str) -> float:
    """:func:`overlay_score` of the two families' templates in their canonical frame (aligned)."""
    ta, tb = template(fam_a), template(fam_b)
    return overlay_score(ta.verts, ta.faces, fam_a, tb.verts, tb.faces, fam_b)
