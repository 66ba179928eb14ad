"""Recover a toy family's part parameters from any mesh, and compare two objects' structures.

**Frame.** Fits run in the frame the mesh is given in, taken to be a set's *world frame* (+Y up,
front +Z, world units): what ``a3d_mesh.run.TrainedSet.mesh`` returns and what shapes.py and
:mod:`a3d_mesh.toy.structure` build. No scale is fitted: within a set every object shares one
frame, so sizes are part of the structure. ``translation`` is the model's origin: the footprint's
centre in X / Z, fitted (a generated object need not be centred as the procedural ones are), and
the ground in Y, the mesh's lowest vertex (not fitted: see :func:`fit_structure`). Exported GLBs (metres, grounded, one scale for the set) must be
mapped back to world units by the caller first. The orientation is discrete: the canonical object
turned about +Y by a multiple of 90 deg, reported as ``structure.back_side`` (see
:mod:`a3d_mesh.toy.structure`; tables are tried at 0 and 90 deg, as 180 is the same table, and
the stool's turn is its continuous ``leg_angle``).

**Fit** (:func:`fit_structure`). ``n_points`` area-uniform samples of the mesh surface; the
family's model is the union of its parts (:func:`a3d_mesh.toy.structure.parts`: axis-aligned boxes
and vertical cylinders) whose exact signed distance is differentiable in the parameters. Loss:
``mean |SDF(points)|`` (every mesh point on the model) ``+ coverage_weight * mean distance from the
model's surface to the nearest mesh point`` (every model part on the mesh; without it a part the
mesh lacks, e.g. a missing back, would cost nothing). Parameters live in bounds (``FIT_BOUNDS``:
each class range widened by half its width + 0.02 on both sides) through a sigmoid, so the fit
says how a mesh looks *as a member of the family*; a mesh of another family does not fit.
Hypotheses: every quarter turn x (template + ``n_starts - 1`` samples), optimised together as one
batch with Adam; after a third of the steps the ``keep`` best continue; the lowest loss wins. About
1.5 s for a chair (12 hypotheses), 0.6 s for a stool, one thread, 400 points, 150 steps.

**Residual** ``residual`` = mean |SDF| at the mesh points (world units), ``coverage`` the model
-> mesh term. ``fits`` = ``residual < residual_max`` and ``coverage < coverage_max`` (defaults
``RESIDUAL_MAX`` / ``COVERAGE_MAX``, chosen from procedural meshes: own family <= 0.0035 residual
and 0.034-0.053 coverage with vertices jittered by 0.01, other families >= 0.043 and >= 0.091;
see docs/toy-structure.md).

**Distance** (:func:`structure_distance`): over the quantities both families have
(:func:`a3d_mesh.toy.structure.shared_values`), each object's deviation from its own family's mean,
differenced and divided by the two families' spreads averaged: ``|(a - mu_a) - (b - mu_b)| /
((sd_a + sd_b) / 2)``. For one family that is ``|a - b| / sd``; across families the class-typical
offsets (a bench is wider than a chair) are not counted as misalignment. Plus an orientation term
(back sides / long axes: the turn between the two, modulo their common symmetry, over 90 deg).
The distance is the mean of the terms: 0 for identical structures, about 1.15 for two independent
draws of one family. ``None`` when either object does not fit its own family.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from a3d_mesh.metrics.surface import sample_surface
from a3d_mesh.toy.shapes import FAMILIES, SYMMETRY_ORDER
from a3d_mesh.toy.structure import (ANGLES, SIDE_YAW, LEG_ANGLE_PERIOD, PARAMS, RANGES, Structure,
                                    parts, quarter_turn, sample_structure, shared_stats, spread, template_structure)

FIT_BOUNDS: dict[str, dict[str, tuple[float, float]]] = {
    f: {k: (lo - (hi - lo) / 2 - 0.02, hi + (hi - lo) / 2 + 0.02)
        for k, (lo, hi) in RANGES[f].items() if k not in ANGLES}
    for f in FAMILIES}
RESIDUAL_MAX = 0.025
COVERAGE_MAX = 0.08
# Quarter turns tried per family: a table turned by 180 deg is the same table; the stool turns by leg_angle.
QUARTERS = {"chair": (0, 1, 2, 3), "bench": (0, 1, 2, 3), "table": (0, 1), "stool": (0,)}
_SIDE_OF_QUARTER = {yaw // 90: side for side, yaw in SIDE_YAW.items()}


@dataclass
class StructureFit:
    """The fitted structure of one mesh (frames: module docstring).

    ``structure``: parameters (world units, object frame) and ``back_side`` (world frame);
    ``translation`` [3]: model origin (footprint centre on the ground) in the mesh's frame;
    ``residual``, ``coverage``: world units; ``side_loss``: the best loss at each tried side;
    ``seconds``: wall time of the fit."""

    family: str
    structure: Structure
    translation: tuple[float, float, float]
    residual: float
    coverage: float
    fits: bool
    side_loss: dict[str, float]
    seconds: float

    def to_dict(self) -> dict:
        return {"family": self.family, **self.structure.to_dict(), "translation": list(self.translation),
                "residual": self.residual, "coverage": self.coverage, "fits": self.fits,
                "side_loss": self.side_loss, "seconds": self.seconds}


def _box_sdf(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Exact SDF of boxes [H,B,3] corners at points [H,N,3]: [H,B,N]."""
    c, h = (lo + hi) / 2, (hi - lo).abs() / 2
    q = (x[:, None] - c[:, :, None]).abs() - h[:, :, None]
    out = (q.clamp(min=0).square().sum(-1) + 1e-12).sqrt()  # eps: a finite gradient on the surface
    return out + q.amax(-1).clamp(max=0)


def _cyl_sdf(x: torch.Tensor, cyl: torch.Tensor) -> torch.Tensor:
    """Exact SDF of vertical capped cylinders [H,C,5] (cx, cz, r, y0, y1) at points [H,N,3]: [H,C,N]."""
    cx, cz, r, y0, y1 = (cyl[..., i, None] for i in range(5))
    rad = ((x[:, None, :, 0] - cx).square() + (x[:, None, :, 2] - cz).square() + 1e-12).sqrt() - r
    ver = (x[:, None, :, 1] - (y0 + y1) / 2).abs() - (y1 - y0) / 2
    q = torch.stack([rad, ver], -1)
    return (q.clamp(min=0).square().sum(-1) + 1e-12).sqrt() + q.amax(-1).clamp(max=0)


def _gather(family: str, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The batch's boxes as (lo, hi) [H,B,2,3] and cylinders [H,C,5] (None where the family has none)."""
    boxes, cyls = [], []
    for prim in parts(family, p):
        if prim[0] == "box":
            boxes.append(torch.stack([torch.stack(list(prim[1]), -1), torch.stack(list(prim[2]), -1)], 1))
        else:
            cyls.append(torch.stack(list(prim[1:6]), -1))
    return (torch.stack(boxes, 1) if boxes else None), (torch.stack(cyls, 1) if cyls else None)


def _unit_samples(k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed stratified samples of the unit box surface ``[-1, 1]^3``: points [6 k^2, 3] and which
    axis is normal to their face [6 k^2] (for area weights)."""
    g = torch.Generator().manual_seed(seed)
    grid = (torch.stack(torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij"), -1).reshape(-1, 2)
            + torch.rand(k * k, 2, generator=g)) / k * 2 - 1
    pts, axes = [], []
    for ax in range(3):
        others = [a for a in range(3) if a != ax]
        for sign in (-1.0, 1.0):
            p = torch.zeros(k * k, 3)
            p[:, ax], p[:, others[0]], p[:, others[1]] = sign, grid[:, 0], grid[:, 1]
            pts.append(p)
            axes.append(torch.full((k * k,), ax))
    return torch.cat(pts), torch.cat(axes)


def _model_surface(boxes: torch.Tensor | None, cyls: torch.Tensor | None,
                   k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Points on the model's parts [H,M,3] and their area weights [H,M] (summing to 1 per model)."""
    pts, wts = [], []
    if boxes is not None:
        u, axes = _unit_samples(k)
        lo, hi = boxes[:, :, 0], boxes[:, :, 1]
        c, h = (lo + hi) / 2, (hi - lo).abs() / 2  # [H,B,3]
        pts.append((c[:, :, None] + h[:, :, None] * u).flatten(1, 2))
        face = torch.stack([h[..., 1] * h[..., 2], h[..., 0] * h[..., 2], h[..., 0] * h[..., 1]], -1)  # [H,B,3]
        wts.append((4 * face[..., axes] / (k * k)).flatten(1, 2))
    if cyls is not None:
        n = 4 * k
        a = torch.arange(n) * (2 * math.pi / n)
        t = (torch.arange(n) + 0.5) / n
        cx, cz, r, y0, y1 = (cyls[..., i, None] for i in range(5))  # [H,C,1]
        side = torch.stack([cx + r * torch.sin(a), y0 + (y1 - y0) * t, cz + r * torch.cos(a)], -1)
        cap_r = r * t.sqrt()  # [H,C,n]: area-uniform radii
        caps = [torch.stack([cx + cap_r * torch.sin(a * 2.3), y.expand_as(cap_r), cz + cap_r * torch.cos(a * 2.3)], -1)
                for y in (y0, y1)]
        pts.append(torch.cat([side] + caps, 2).flatten(1, 2))
        w_side = (2 * math.pi * r * (y1 - y0) / n).expand(-1, -1, n)
        w_cap = (math.pi * r * r / n).expand(-1, -1, 2 * n)
        wts.append(torch.cat([w_side, w_cap], 2).flatten(1, 2))
    p, w = torch.cat(pts, 1), torch.cat(wts, 1)
    return p, w / w.sum(1, keepdim=True)


def _decode(family: str, theta: torch.Tensor) -> dict[str, torch.Tensor]:
    """Unconstrained [H,P] -> parameters (``FIT_BOUNDS`` through a sigmoid; leg_angle 60 deg per unit)."""
    out = {}
    for i, k in enumerate(PARAMS[family]):
        if k in ANGLES:
            out[k] = theta[:, i] * 60.0
        else:
            lo, hi = FIT_BOUNDS[family][k]
            out[k] = lo + (hi - lo) * torch.sigmoid(theta[:, i])
    return out


def _encode(family: str, p: dict[str, float]) -> list[float]:
    out = []
    for k in PARAMS[family]:
        if k in ANGLES:
            out.append(p[k] / 60.0)
        else:
            lo, hi = FIT_BOUNDS[family][k]
            q = min(max((p[k] - lo) / (hi - lo), 1e-3), 1 - 1e-3)
            out.append(math.log(q / (1 - q)))
    return out


def _losses(family: str, theta: torch.Tensor, trans: torch.Tensor, pts: torch.Tensor,
            coverage_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per hypothesis [H]: total loss, residual (mean |SDF| of the points) and coverage.

    ``pts`` [H,N,3]: the mesh samples turned into each hypothesis' canonical frame; ``trans`` [H,3]:
    the model origin in that frame. Nearest parts and nearest points are picked without gradient and
    only the picked distances are differentiated: the union's SDF is the nearest part's anyway, and
    a [H,M,N] distance matrix in the graph made the backward pass most of the fit's time."""
    x = pts - trans[:, None]  # [H,N,3] model frame
    boxes, cyls = _gather(family, _decode(family, theta))
    sdf = []
    if boxes is not None:
        sdf.append(_box_sdf(x, boxes[:, :, 0], boxes[:, :, 1]))
    if cyls is not None:
        sdf.append(_cyl_sdf(x, cyls))
    all_sdf = torch.cat(sdf, 1)  # [H,P,N]
    with torch.no_grad():
        part = all_sdf.abs().argmin(1, keepdim=True)
    residual = all_sdf.gather(1, part).squeeze(1).abs().mean(1)
    surf, w = _model_surface(boxes, cyls)
    with torch.no_grad():
        near = torch.cdist(surf, x).argmin(2)  # [H,M]
    hit = x.gather(1, near[..., None].expand(-1, -1, 3))
    coverage = (((surf - hit).square().sum(-1) + 1e-12).sqrt() * w).sum(1)
    return residual + coverage_weight * coverage, residual, coverage


def _starts(family: str, n_starts: int, seed: int) -> list[dict[str, float]]:
    """Initial parameters: the template, then samples; stool leg angles spread over their period."""
    g = torch.Generator().manual_seed(seed)
    out = [template_structure(family).params] + [sample_structure(family, g).params for _ in range(n_starts - 1)]
    if family == "stool":
        for i, p in enumerate(out):
            p["leg_angle"] = i * LEG_ANGLE_PERIOD / len(out) - LEG_ANGLE_PERIOD / 2
    return out


def _optimise(family: str, theta: torch.Tensor, xz: torch.Tensor, ground: torch.Tensor, pts: torch.Tensor,
              steps: int, lr: tuple[float, float], coverage_weight: float) -> None:
    """Adam on ``theta`` [H,P] and ``xz`` [H,2] in place, learning rate cosine from ``lr[0]`` to
    ``lr[1]`` (the translation at a tenth: world units move faster than sigmoid logits)."""
    theta.requires_grad_(True), xz.requires_grad_(True)
    opt = torch.optim.Adam([{"params": [theta], "lr": lr[0]}, {"params": [xz], "lr": lr[0] / 10}])
    for i in range(steps):
        f = lr[1] / lr[0] + (1 - lr[1] / lr[0]) * 0.5 * (1 + math.cos(math.pi * i / max(steps, 1)))
        opt.param_groups[0]["lr"], opt.param_groups[1]["lr"] = lr[0] * f, lr[0] * f / 10
        opt.zero_grad()
        loss = _losses(family, theta, _trans(xz, ground), pts, coverage_weight)[0]
        loss.sum().backward()  # the hypotheses are independent: a sum leaves each its own gradient
        opt.step()
    theta.requires_grad_(False), xz.requires_grad_(False)


def _trans(xz: torch.Tensor, ground: torch.Tensor) -> torch.Tensor:
    """[H,3] model origin in each turned frame: fitted X / Z, the fixed ground height."""
    return torch.stack([xz[:, 0], ground.expand(xz.shape[0]), xz[:, 1]], -1)


def fit_structure(verts: torch.Tensor, faces: torch.Tensor, family: str, n_points: int = 400, steps: int = 150,
                  n_starts: int = 3, keep: int = 3, coverage_weight: float = 0.5, lr: float = 0.1, seed: int = 0,
                  residual_max: float = RESIDUAL_MAX, coverage_max: float = COVERAGE_MAX) -> StructureFit:
    """Fit ``family``'s parametric model to the mesh ``(verts [V,3], faces [F,3])`` (world frame,
    world units; see the module docstring). Deterministic for a given ``seed``.

    Every quarter turn x ``n_starts`` starts runs for a third of ``steps``; the ``keep`` best then
    run the rest (the side is settled early: pruning halves a chair's time). ``side_loss`` holds,
    per side, the best loss after the full fit, or at the pruning for sides pruned."""
    if family not in RANGES:
        raise ValueError(f"unknown toy family '{family}' (known: {', '.join(FAMILIES)})")
    t0 = time.perf_counter()
    pts = sample_surface(verts.detach().float().cpu(), faces.cpu(), n_points, seed)
    # The ground is the mesh's lowest vertex (export's ground=each does the same) and is not fitted:
    # a free ground trades off against seat_h through the few samples on the legs' feet (slowly).
    ground = verts[:, 1].detach().float().cpu().min()
    lo, hi = pts.amin(0), pts.amax(0)
    centre = torch.stack([(lo[0] + hi[0]) / 2, ground, (lo[2] + hi[2]) / 2])
    hyps = [(q, p) for q in QUARTERS[family] for p in _starts(family, n_starts, seed)]
    quarters = [q for q, _ in hyps]
    # Turn the points, not the model: the model stays axis-aligned in its own frame.
    turned = torch.stack([quarter_turn(pts, -q) for q in quarters])  # [H,N,3]
    theta = torch.tensor([_encode(family, p) for _, p in hyps])
    xz = torch.stack([quarter_turn(centre, -q)[[0, 2]] for q in quarters])
    first = steps // 3
    _optimise(family, theta, xz, ground, turned, first, (lr, lr / 2), coverage_weight)
    side_loss: dict[str, float] = {}
    loss = _losses(family, theta, _trans(xz, ground), turned, coverage_weight)[0]
    for h, q in enumerate(quarters):
        side_loss[_SIDE_OF_QUARTER[q]] = min(side_loss.get(_SIDE_OF_QUARTER[q], math.inf), float(loss[h]))
    idx = loss.argsort()[:keep]
    theta, xz, turned, quarters = theta[idx].clone(), xz[idx].clone(), turned[idx], [quarters[i] for i in idx]
    _optimise(family, theta, xz, ground, turned, steps - first, (lr / 2, lr / 20), coverage_weight)
    loss, residual, coverage = _losses(family, theta, _trans(xz, ground), turned, coverage_weight)
    for h, q in enumerate(quarters):
        side_loss[_SIDE_OF_QUARTER[q]] = min(side_loss[_SIDE_OF_QUARTER[q]], float(loss[h]))
    best = int(loss.argmin())
    params = {k: float(v[best]) for k, v in _decode(family, theta).items()}
    if "leg_angle" in params:  # defined modulo the stool's symmetry: reduce to [-60, 60)
        params["leg_angle"] = (params["leg_angle"] + LEG_ANGLE_PERIOD / 2) % LEG_ANGLE_PERIOD - LEG_ANGLE_PERIOD / 2
    res, cov = float(residual[best]), float(coverage[best])
    translation = quarter_turn(_trans(xz, ground)[best], quarters[best])
    return StructureFit(family, Structure(family, params, _SIDE_OF_QUARTER[quarters[best]]),
                        tuple(float(v) for v in translation), res, cov, res < residual_max and cov < coverage_max,
                        dict(sorted(side_loss.items())), time.perf_counter() - t0)


def _circ(a: float, period: float) -> float:
    """Distance of ``a`` from 0 modulo ``period``, in ``[0, period / 2]``."""
    a = math.fmod(a, period) % period
    return min(a, period - a)


def structure_terms(a: StructureFit, b: StructureFit, centred: bool = True,
                    min_spread: float = 0.0) -> dict[str, float] | None:
    """The per-quantity terms of :func:`structure_distance` (dimensionless), ``None`` when either
    fit does not fit its family. ``centred=False`` compares raw values ``|a - b| / sd`` (class
    offsets counted too). ``min_spread`` (world units) floors the averaged spread: thickness and
    leg ranges are 0.02-0.04 wide (sd 0.006-0.012), so on rough meshes the fit's own error there
    would otherwise dominate the mean (docs/toy-structure.md, the noise floor)."""
    if not (a.fits and b.fits):
        return None
    va, vb = a.structure.shared(), b.structure.shared()
    sa, sb = shared_stats(a.family), shared_stats(b.family)
    terms = {}
    for k in va.keys() & vb.keys():
        (ma, da), (mb, db) = sa[k], sb[k]
        diff = (va[k] - ma) - (vb[k] - mb) if centred else va[k] - vb[k]
        terms[k] = abs(diff) / max((da + db) / 2, min_spread)
    if a.family == b.family == "stool":
        d = _circ(a.structure.params["leg_angle"] - b.structure.params["leg_angle"], LEG_ANGLE_PERIOD)
        terms["leg_angle"] = d / spread("stool")["leg_angle"]
    elif "stool" not in (a.family, b.family):
        period = 360.0 / math.lcm(SYMMETRY_ORDER[a.family], SYMMETRY_ORDER[b.family])
        terms["orientation"] = _circ(a.structure.yaw_deg - b.structure.yaw_deg, period) / 90.0
    return dict(sorted(terms.items()))


def structure_distance(a: StructureFit, b: StructureFit, centred: bool = True,
                       min_spread: float = 0.0) -> float | None:
    """Mean of :func:`structure_terms` (same arguments): 0 for the same structure, ~1.15 for
    independent draws of one family, or ``None`` when either mesh does not fit its own family
    (a collapsed or wrong-class mesh scores nothing)."""
    terms = structure_terms(a, b, centred, min_spread)
    return None if terms is None else sum(terms.values()) / len(terms)


__all__ = ["FIT_BOUNDS", "RESIDUAL_MAX", "COVERAGE_MAX", "StructureFit", "fit_structure", "structure_terms",
           "structure_distance"]
