"""Explicit part parameters of the toy families: one :class:`Structure` per object, its mesh, a sampler.

:mod:`a3d_mesh.toy.shapes` builds each family from a handful of proportions, with the rest of the
structure (where the legs stand, which side the back is on) fixed in code. This module names every
structural choice as a parameter, so that a fitted mesh can be described and two objects compared
part by part (:mod:`a3d_mesh.metrics.structure`). Units are world units (the scene cube is
``[-1, 1]^3``); the frame is that of docs/conventions.md and shapes.py: +Y up, front +Z, the
footprint centred on the Y axis, the bounding box centred vertically on y = 0.

Parameters (``PARAMS[family]``; all lengths in world units, ``leg_angle`` in degrees):

* ``seat_h``: height of the seat's (table top's) underside above the ground = the legs' length;
* ``width``, ``depth``: seat extent along the back rest and front-to-back (table: long and short
  side); the stool has ``radius`` instead (its footprint is ``2 radius`` both ways);
* ``thick``: seat / top thickness (also the thickness of the back frame, as in shapes.py);
* ``leg``: leg thickness (square side; the stool's leg diameter; the bench's slab width along X);
* ``leg_inset``: distance from the seat edge to the leg's centre line, along X and Z (chair,
  table) or X (bench, whose slab legs span the full depth); shapes.py puts chair legs flush
  (``leg / 2``), table legs 0.05 further in, bench slabs at 0.1;
* stool: ``leg_radius``, distance of the three leg centres from the axis (shapes.py: 0.7 radius),
  and ``leg_angle``, the angle (deg, from +Z towards +X) of the first leg, defined modulo 120;
* ``back_h``: back rest height above the seat's top; ``rail``: height of the back's top rail
  (the back is two posts of width ``leg`` under a full-width rail, ``thick`` deep);
* ``back_side`` (discrete, on :class:`Structure`): the side the back rest is on in the world
  frame, ``-z`` canonical, or ``+z`` / ``-x`` / ``+x``: the canonical object turned about +Y by
  ``SIDE_YAW[back_side]`` deg (exactly, by swapping axes). Back-less families keep the word as
  their orientation: a table with ``-x`` has its long side along Z (``-z`` and ``+z`` are the same
  table); the stool stays ``-z`` (its orientation is ``leg_angle``).

``RANGES`` (the sampler's class-typical ranges) extends ``shapes.RANGES`` with the new parameters;
every shapes.py object maps into them (:func:`from_toy`, exact same mesh). Sampling here uses
its own draws (:func:`sample_structure`); ``shapes.sample_object``'s stream, on which the bundled
prior was trained, is untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from a3d_mesh.toy.shapes import FAMILIES, RANGES as SHAPE_RANGES, assemble, box, cylinder

# Class-typical ranges (uniform in the sampler); shapes.RANGES plus the parameters it fixes in code.
RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "chair": {**SHAPE_RANGES["chair"], "leg_inset": (0.045, 0.09)},
    "stool": {**SHAPE_RANGES["stool"], "leg_radius": (0.22, 0.32), "leg_angle": (-60.0, 60.0)},
    "table": {**SHAPE_RANGES["table"], "leg_inset": (0.09, 0.16)},
    "bench": {**SHAPE_RANGES["bench"], "leg_inset": (0.08, 0.14)},
}
PARAMS: dict[str, tuple[str, ...]] = {f: tuple(RANGES[f]) for f in FAMILIES}
BACK_SIDES = ("-z", "-x", "+z", "+x")
# Yaw (deg, about +Y, counter-clockwise from above as shapes.rotate_yaw) taking the canonical -Z back to each side.
SIDE_YAW = {"-z": 0, "-x": 90, "+z": 180, "+x": 270}
HAS_BACK = {f: "back_h" in RANGES[f] for f in FAMILIES}
ANGLES = ("leg_angle",)  # circular parameters (deg, period LEG_ANGLE_PERIOD)
LEG_ANGLE_PERIOD = 120.0


@dataclass(frozen=True)
class Structure:
    """One object: ``family``, its named parameters ``params`` (``PARAMS[family]``, world units /
    degrees, object frame: back on -Z before turning) and ``back_side`` (world frame)."""

    family: str
    params: dict[str, float] = field(hash=False)
    back_side: str = "-z"

    def __post_init__(self) -> None:
        if self.family not in RANGES:
            raise ValueError(f"unknown toy family '{self.family}' (known: {', '.join(FAMILIES)})")
        missing = set(PARAMS[self.family]) - set(self.params)
        extra = set(self.params) - set(PARAMS[self.family])
        if missing or extra:
            raise ValueError(f"{self.family} parameters must be {PARAMS[self.family]} (missing {sorted(missing)}, "
                             f"unknown {sorted(extra)})")
        if self.back_side not in BACK_SIDES:
            raise ValueError(f"back_side must be one of {BACK_SIDES}, got {self.back_side!r}")

    @property
    def yaw_deg(self) -> int:
        """Turn (deg) from the canonical object to this one: ``SIDE_YAW[back_side]``."""
        return SIDE_YAW[self.back_side]

    def shared(self) -> dict[str, float]:
        """The quantities every family has, in world units: seat_h, thick, leg, width, depth,
        leg_inset (the stool's footprint is ``2 radius`` both ways, its inset ``radius -
        leg_radius``), plus back_h and rail where the family has a back."""
        return shared_values(self.family, self.params)

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "params": dict(self.params), "back_side": self.back_side}


def shared_values(family: str, p: dict[str, float]) -> dict[str, float]:
    """See :meth:`Structure.shared`."""
    out = {k: p[k] for k in ("seat_h", "thick", "leg")}
    if family == "stool":
        out.update(width=2 * p["radius"], depth=2 * p["radius"], leg_inset=p["radius"] - p["leg_radius"])
    else:
        out.update(width=p["width"], depth=p["depth"], leg_inset=p["leg_inset"])
    if HAS_BACK[family]:
        out.update(back_h=p["back_h"], rail=p["rail"])
    return out


def from_toy(family: str, toy_params: dict[str, float], back_side: str = "-z") -> Structure:
    """The structure of a shapes.py object (``ToyObject.family, ToyObject.params``): the constants
    shapes.py fixes in code become parameters, so :func:`build_structure` gives ``shapes.build``'s
    mesh exactly (same vertices, same order)."""
    p = {k: float(toy_params[k]) for k in SHAPE_RANGES[family]}
    if family == "chair":
        p["leg_inset"] = p["leg"] / 2  # flush in the corners
    elif family == "table":
        p["leg_inset"] = 0.05 + p["leg"] / 2
    elif family == "bench":
        p["leg_inset"] = 0.1
    else:
        p["leg_radius"], p["leg_angle"] = 0.7 * p["radius"], 0.0
    return Structure(family, p, back_side)


def parts(family: str, p: dict[str, Any]) -> list[tuple]:
    """The object's primitives in its canonical frame (back on -Z), ground at y = 0, in shapes.py's
    order (seat, back posts, back rail, legs): ``("box", lo, hi)`` with corners ``(x, y, z)`` or
    ``("cyl", cx, cz, radius, y0, y1, segments)`` (vertical). Values are whatever ``p`` holds:
    floats (for meshes) or tensors ``[S]`` (a batch of models, differentiable; the fit's SDF)."""
    y, t, leg = p["seat_h"], p["thick"], p["leg"]
    if family == "stool":
        a0 = p["leg_angle"] * (math.pi / 180)
        sin, cos = (torch.sin, torch.cos) if torch.is_tensor(a0) else (math.sin, math.cos)
        out: list[tuple] = [("cyl", 0.0 * y, 0.0 * y, p["radius"], y, y + t, 24)]
        for a in (a0, a0 + 2 * math.pi / 3, a0 + 4 * math.pi / 3):
            out.append(("cyl", p["leg_radius"] * sin(a), p["leg_radius"] * cos(a), leg / 2, 0.0 * y, y, 12))
        return out
    hw, hd = p["width"] / 2, p["depth"] / 2
    out = [("box", (-hw, y, -hd), (hw, y + t, hd))]
    if HAS_BACK[family]:
        y0, y1, rail = y + t, y + t + p["back_h"], p["rail"]
        out += [("box", (-hw, y0, -hd), (-hw + leg, y1 - rail, -hd + t)),
                ("box", (hw - leg, y0, -hd), (hw, y1 - rail, -hd + t)),
                ("box", (-hw, y1 - rail, -hd), (hw, y1, -hd + t))]
    ix = hw - p["leg_inset"]  # leg centre lines
    if family == "bench":  # two slabs spanning the depth
        return out + [("box", (sx * ix - leg / 2, 0.0 * y, -hd), (sx * ix + leg / 2, y, hd)) for sx in (-1, 1)]
    iz = hd - p["leg_inset"]
    return out + [("box", (sx * ix - leg / 2, 0.0 * y, sz * iz - leg / 2), (sx * ix + leg / 2, y, sz * iz + leg / 2))
                  for sx in (-1, 1) for sz in (-1, 1)]


def quarter_turn(points: torch.Tensor, quarters: int) -> torch.Tensor:
    """Points [..., 3] turned about +Y by ``quarters * 90`` deg (as ``shapes.rotate_yaw``), exactly:
    a quarter turn maps ``(x, y, z) -> (z, y, -x)``."""
    x, y, z = points.unbind(-1)
    for _ in range(quarters % 4):
        x, z = z, -x
    return torch.stack([x, y, z], -1)


def build_structure(s: Structure) -> tuple[torch.Tensor, torch.Tensor]:
    """The mesh of ``s``: ``(verts [V,3] float32, faces [F,3] int64)`` in the world frame (bounding
    box centred on y = 0, back on ``s.back_side``), a soup of closed boxes and cylinders built with
    shapes.py's helpers; equal to ``shapes.build`` for a :func:`from_toy` structure."""
    meshes = []
    for prim in parts(s.family, s.params):
        if prim[0] == "box":
            meshes.append(box(tuple(float(v) for v in prim[1]), tuple(float(v) for v in prim[2])))
        else:
            _, cx, cz, r, y0, y1, seg = prim
            meshes.append(cylinder(float(cx), float(cz), float(r), float(y0), float(y1), seg))
    v, f = assemble(meshes)
    return quarter_turn(v, SIDE_YAW[s.back_side] // 90), f


def template_structure(family: str, back_side: str = "-z") -> Structure:
    """The mid-range member of ``family`` (every parameter at the middle of its ``RANGES`` entry)."""
    if family not in RANGES:
        raise ValueError(f"unknown toy family '{family}' (known: {', '.join(FAMILIES)})")
    return Structure(family, {k: (lo + hi) / 2 for k, (lo, hi) in RANGES[family].items()}, back_side)


def sample_structure(family: str, generator: torch.Generator, back_sides: tuple[str, ...] = ("-z",),
                     quantiles: dict[str, float] | None = None) -> Structure:
    """A random member of ``family``: each parameter uniform in ``RANGES[family]``, the back side
    uniform over ``back_sides`` (default: canonical). ``quantiles`` (name -> q in [0, 1]) fixes some
    parameters at ``lo + q (hi - lo)`` instead (how the benchmark draws a shared structure for
    several families); they draw nothing, the others draw in ``PARAMS`` order."""
    if family not in RANGES:
        raise ValueError(f"unknown toy family '{family}' (known: {', '.join(FAMILIES)})")
    quantiles = quantiles or {}
    p = {}
    for k, (lo, hi) in RANGES[family].items():
        q = quantiles[k] if k in quantiles else float(torch.rand((), generator=generator))
        p[k] = lo + (hi - lo) * q
    # One side: no draw, so the default sampler's stream is the parameters alone.
    side = back_sides[int(torch.randint(len(back_sides), (), generator=generator))] if len(back_sides) > 1 \
        else back_sides[0]
    return Structure(family, p, side)


def spread(family: str) -> dict[str, float]:
    """Standard deviation of each parameter under :func:`sample_structure` (uniform:
    ``(hi - lo) / sqrt(12)``), world units / degrees, for ``PARAMS[family]``."""
    return {k: (hi - lo) / math.sqrt(12) for k, (lo, hi) in RANGES[family].items()}


def shared_stats(family: str) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation (world units) of each of :func:`shared_values` under
    :func:`sample_structure` (independent uniforms: the stool's ``2 radius`` has twice the radius'
    spread, ``radius - leg_radius`` the root sum of squares)."""
    mean = {k: (lo + hi) / 2 for k, (lo, hi) in RANGES[family].items()}
    sd = spread(family)
    out = {k: (mean[k], sd[k]) for k in ("seat_h", "thick", "leg")}
    if family == "stool":
        out["width"] = out["depth"] = (2 * mean["radius"], 2 * sd["radius"])
        out["leg_inset"] = (mean["radius"] - mean["leg_radius"], math.hypot(sd["radius"], sd["leg_radius"]))
    else:
        out.update({k: (mean[k], sd[k]) for k in ("width", "depth", "leg_inset")})
    if HAS_BACK[family]:
        out.update({k: (mean[k], sd[k]) for k in ("back_h", "rail")})
    return out
