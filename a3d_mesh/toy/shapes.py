"""Procedural furniture families that share one structure: chair, stool, table, bench.

Every object is a union of boxes and vertical cylinders (seat or top, legs, back), built in the
world frame of docs/conventions.md: +Y up, the footprint centred on the Y axis, the bounding box
centred vertically on y = 0 so that the object sits in the middle of the scene cube. The
*canonical* orientation puts a back rest (chair, bench) on the -Z side. The families differ in
proportions and parts, so the class is recognisable in a 32 px silhouette:

==========  =====================================  ==================  ================
family      parts                                  yaw symmetry order  footprint
==========  =====================================  ==================  ================
chair       square seat, 4 legs, back (-Z)         1                   ~0.9 x 0.9
stool       round seat, 3 legs, tall               3                   ~0.8 round
table       wide thin top, 4 long legs             2                   ~1.6 x 0.9
bench       long low seat, 2 slab legs, back (-Z)  1                   ~1.7 x 0.55
==========  =====================================  ==================  ================

A back is an open frame (two posts and a top rail), not a slab: seen from behind, a slab back
hides the seat, so a solid column on legs looks like a chair from behind from all four sides of
its square footprint, and a text-to-image prior cannot tell one view of it from a chair's. Through
the frame's window the seat and the background show, so no view of a column looks like a chair.

``sample_object(family, generator)`` draws the family's parameters from their ranges (the
variation), ``template(family)`` is the mid-range member (what metrics fit against).
Meshes are ``(verts [V,3] float32, faces [F,3] int64)``, counter-clockwise from outside; parts
touch but do not overlap, so the triangle soup's surface is (almost) the union's surface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FAMILIES = ("chair", "stool", "table", "bench")
# Rotational symmetry about +Y: yaw is only defined modulo 360 / order.
SYMMETRY_ORDER = {"chair": 1, "stool": 3, "table": 2, "bench": 1}
# Parameter ranges (world units; the scene cube is [-1, 1]^3).
RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "chair": {"width": (0.8, 0.95), "depth": (0.8, 0.95), "seat_h": (0.6, 0.75), "leg": (0.09, 0.13),
              "back_h": (0.6, 0.8), "thick": (0.1, 0.12), "rail": (0.15, 0.22)},
    "stool": {"radius": (0.36, 0.44), "seat_h": (0.95, 1.15), "leg": (0.09, 0.12), "thick": (0.1, 0.12)},
    "table": {"width": (1.5, 1.7), "depth": (0.85, 1.0), "seat_h": (0.8, 0.95), "leg": (0.09, 0.12),
              "thick": (0.08, 0.1)},
    "bench": {"width": (1.6, 1.8), "depth": (0.5, 0.6), "seat_h": (0.45, 0.55), "leg": (0.1, 0.12),
              "back_h": (0.4, 0.5), "thick": (0.1, 0.12), "rail": (0.12, 0.16)},
}

# A small colour vocabulary (linear albedo in [0, 1]); white is left out: it is the background.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.8, 0.15, 0.12), "green": (0.2, 0.65, 0.2), "blue": (0.15, 0.3, 0.85),
    "yellow": (0.9, 0.8, 0.15), "purple": (0.55, 0.2, 0.7), "orange": (0.95, 0.5, 0.1),
}


@dataclass
class ToyObject:
    """One procedural object: its family, parameters, mesh (canonical yaw) and albedo."""

    family: str
    params: dict[str, float]
    verts: torch.Tensor
    faces: torch.Tensor
    colour: str | None = None

    def albedo(self) -> tuple[float, float, float]:
        return COLOURS[self.colour] if self.colour else (0.6, 0.6, 0.6)


def box(lo: tuple[float, float, float], hi: tuple[float, float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Axis-aligned box from corner ``lo`` to ``hi``: 8 vertices, 12 outward CCW triangles."""
    x0, y0, z0 = lo
    x1, y1, z1 = hi
    v = torch.tensor([[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0],
                      [x0, y0, z1], [x1, y0, z1], [x1, y1, z1], [x0, y1, z1]], dtype=torch.float32)
    f = torch.tensor([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
                      [3, 6, 2], [3, 7, 6], [0, 4, 7], [0, 7, 3], [1, 2, 6], [1, 6, 5]], dtype=torch.int64)
    return v, f


def cylinder(cx: float, cz: float, radius: float, y0: float, y1: float,
             segments: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertical capped cylinder about (cx, cz) from height y0 to y1, outward CCW triangles."""
    ang = torch.arange(segments, dtype=torch.float32) * (2 * math.pi / segments)
    ring = torch.stack([cx + radius * torch.sin(ang), torch.zeros(segments), cz + radius * torch.cos(ang)], -1)
    bottom, top = ring.clone(), ring.clone()
    bottom[:, 1], top[:, 1] = y0, y1
    centres = torch.tensor([[cx, y0, cz], [cx, y1, cz]], dtype=torch.float32)
    v = torch.cat([bottom, top, centres])
    i = torch.arange(segments)
    j = (i + 1) % segments
    cb, ct = 2 * segments, 2 * segments + 1
    # The ring runs counter-clockwise seen from +Y (sin, cos order), so side quads are (i, j, top j).
    side = torch.cat([torch.stack([i, j, j + segments], -1), torch.stack([i, j + segments, i + segments], -1)])
    caps = torch.cat([torch.stack([torch.full_like(i, cb), j, i], -1),
                      torch.stack([torch.full_like(i, ct), i + segments, j + segments], -1)])
    return v, torch.cat([side, caps]).long()


def merge(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate meshes into one (a soup of closed parts)."""
    verts, faces, off = [], [], 0
    for v, f in parts:
        verts.append(v)
        faces.append(f + off)
        off += v.shape[0]
    return torch.cat(verts), torch.cat(faces)


def legs_at_corners(hw: float, hd: float, leg: float, y0: float, y1: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Four square legs of side ``leg`` from ``y0`` to ``y1``, flush inside the corners of ``|x| <= hw, |z| <= hd``."""
    return [box((sx * hw - (leg if sx > 0 else 0), y0, sz * hd - (leg if sz > 0 else 0)),
                (sx * hw + (0 if sx > 0 else leg), y1, sz * hd + (0 if sz > 0 else leg)))
            for sx in (-1, 1) for sz in (-1, 1)]


def _legs(family: str, p: dict[str, float], y1: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The family's legs from the ground to height ``y1`` (``p["seat_h"]`` in the real object)."""
    if family == "chair":
        return legs_at_corners(p["width"] / 2, p["depth"] / 2, p["leg"], 0.0, y1)
    if family == "stool":
        r = p["radius"]
        return [cylinder(0.7 * r * math.sin(a), 0.7 * r * math.cos(a), p["leg"] / 2, 0.0, y1, 12)
                for a in (0.0, 2 * math.pi / 3, 4 * math.pi / 3)]
    if family == "table":
        return legs_at_corners(p["width"] / 2 - 0.05, p["depth"] / 2 - 0.05, p["leg"], 0.0, y1)
    hw, hd = p["width"] / 2, p["depth"] / 2
    return [box((sx * (hw - 0.1) - p["leg"] / 2, 0.0, -hd), (sx * (hw - 0.1) + p["leg"] / 2, y1, hd)) for sx in (-1, 1)]


def top_height(family: str, p: dict[str, float]) -> float:
    """Height of the object's highest point above the ground (before centring)."""
    return p["seat_h"] + p["thick"] + p.get("back_h", 0.0)


def build(family: str, p: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The mesh of ``family`` with parameters ``p`` (see ``RANGES``), ground at y = 0 before centring."""
    if family not in RANGES:
        raise ValueError(f"unknown toy family '{family}' (known: {', '.join(FAMILIES)})")
    return assemble(_parts(family, p))


def _parts(family: str, p: dict[str, float], seat: bool = True) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The object's parts, ground at y = 0: seat or top (unless ``seat`` is False), back, legs."""
    y, t = p["seat_h"], p["thick"]
    parts: list[tuple[torch.Tensor, torch.Tensor]] = []
    if family == "stool":
        # 24- and 12-gons: a turn by 120 deg maps the whole mesh onto itself (order 3 exactly).
        if seat:
            parts = [cylinder(0.0, 0.0, p["radius"], y, y + t, 24)]
    else:
        hw, hd = p["width"] / 2, p["depth"] / 2
        if seat:
            parts = [box((-hw, y, -hd), (hw, y + t, hd))]  # seat or table top
        if "back_h" in p:
            parts += _back_frame(hw, -hd, y + t, top_height(family, p), t, p["leg"], p["rail"])
    return parts + _legs(family, p, y)


def without_seat(obj: "ToyObject") -> "ToyObject":
    """``obj`` with its seat (or table top) removed, legs and back kept, placed exactly where
    ``obj`` is (centred on the full object's height). A diagnostic near miss: the seat is the part
    every family shares, so a prior may give a class word no evidence for it."""
    v, f = merge(_parts(obj.family, obj.params, seat=False))
    v = v - torch.tensor([0.0, top_height(obj.family, obj.params) / 2, 0.0])
    return ToyObject(obj.family, dict(obj.params), v, f, colour=obj.colour)


def _back_frame(hw: float, z0: float, y0: float, y1: float, thick: float, post: float,
                rail: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A back rest from ``y0`` to ``y1`` at ``z0 <= z <= z0 + thick``: two posts of width ``post`` at
    ``x = +-hw`` (flush inside) under a full-width top rail of height ``rail``."""
    posts = [box((sx * hw - (post if sx > 0 else 0), y0, z0), (sx * hw + (0 if sx > 0 else post), y1 - rail, z0 + thick))
             for sx in (-1, 1)]
    return posts + [box((-hw, y1 - rail, z0), (hw, y1, z0 + thick))]


def filled(obj: "ToyObject", height: float) -> "ToyObject":
    """A near miss of ``obj``: everything above ``height`` (from the ground) made one solid block
    (a cylinder for the stool) over the object's footprint, the legs kept below it.

    ``height = seat_h`` turns a chair into the column SDS makes of it, ``0`` gives a legless
    block. These are the hard negatives of the prior's unconditional caption (``toy.data``): the
    shapes a text prompt must be told apart from. Same bounding box, so the same placement."""
    p, fam = obj.params, obj.family
    top = top_height(fam, p)
    if fam == "stool":
        block = cylinder(0.0, 0.0, p["radius"], height, top, 24)
    else:
        block = box((-p["width"] / 2, height, -p["depth"] / 2), (p["width"] / 2, top, p["depth"] / 2))
    legs = _legs(fam, p, height) if height > 0 else []
    return ToyObject(fam, dict(p), *assemble([block] + legs), colour=obj.colour)


def assemble(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`merge` the parts and shift the result so its bounding box is centred on y = 0."""
    v, f = merge(parts)
    lo, hi = v.min(0).values, v.max(0).values
    return v - torch.tensor([0.0, float(lo[1] + hi[1]) / 2, 0.0]), f


def template(family: str) -> ToyObject:
    """The family's mid-range member, canonical yaw."""
    if family not in RANGES:
        raise ValueError(f"unknown toy family '{family}' (known: {', '.join(FAMILIES)})")
    p = {k: (lo + hi) / 2 for k, (lo, hi) in RANGES[family].items()}
    return ToyObject(family, p, *build(family, p))


def sample_object(family: str, generator: torch.Generator, colour: str | None = None) -> ToyObject:
    """A random member of ``family`` (parameters uniform in their ranges), canonical yaw."""
    if family not in RANGES:
        raise ValueError(f"unknown toy family '{family}' (known: {', '.join(FAMILIES)})")
    p = {k: lo + (hi - lo) * float(torch.rand((), generator=generator)) for k, (lo, hi) in RANGES[family].items()}
    return ToyObject(family, p, *build(family, p), colour=colour)


def yaw_matrix(yaw_deg: float | torch.Tensor) -> torch.Tensor:
    """Rotation [3,3] about +Y by ``yaw_deg`` (counter-clockwise seen from above): x' = R x."""
    a = torch.deg2rad(torch.as_tensor(yaw_deg, dtype=torch.float32))
    c, s = torch.cos(a), torch.sin(a)
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    return torch.stack([torch.stack([c, zero, s]), torch.stack([zero, one, zero]), torch.stack([-s, zero, c])])


def rotate_yaw(verts: torch.Tensor, yaw_deg: float | torch.Tensor) -> torch.Tensor:
    """Vertices [V,3] rotated about +Y by ``yaw_deg``."""
    return verts @ yaw_matrix(yaw_deg).to(verts).T
