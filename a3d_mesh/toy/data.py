"""Training images of the toy world: procedural objects in their canonical pose, seen in groups of
views around them, rendered with our rasteriser.

**Canonical pose, known cameras.** Every object stands as ``shapes`` builds it: its front faces
+Z and a back rest (chair, bench) is on the -Z side (docs/conventions.md: azimuth 0 looks at the
front). Real priors know a front: SD from view words, MVDream from its camera input. The toy
prior learns it the MVDream way: each object is rendered in a group of ``TOY_FRAMES`` (4) views
spread evenly around it from a random start azimuth, with one elevation, distance and field of
view per group (``cameras.sample_cameras`` with ``view_group=4``), and every image keeps its
camera's elevation and azimuth, which condition the multi-view prior (``toy.prior``). The ranges
are the toy preset's (configs/toy.yaml repeats them): the prior and the optimisation see the
same kind of views. Lit by ``random_light`` with the renderer's ambient + diffuse shading (or
unlit albedo, as the coarse stage sometimes renders), over a white background, rendered at twice
the size and box-filtered down (a clean antialias at these sizes).

Captions, one per group: ``"a {colour} {family}"``, sometimes just ``"a {family}"``, and ``""``
(the unconditional caption that classifier-free guidance needs).

Near misses (``make_near_misses``): the same objects with their upper part filled solid
(``shapes.filled``: a chair becomes a column on legs, anything a block), captioned ``""`` only.
Without them a column explains "a chair" as well, relative to the unconditional model, as a real
chair does (every view of the column looks like a chair seen from behind), so the implicit
classifier that guidance scales, ``log p(c | x)``, gives SDS no reason to carve one out
(``benchmarks/toy_prior_scores.py``). In the unconditional data they make that margin. Seatless
objects (``make_seatless``: legs and back, no seat or top) are the same kind of hard negative for
the part every family shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from a3d_mesh.cameras import CameraConfig, sample_cameras
from a3d_mesh.render.shading import random_light, render_mesh
from a3d_mesh.toy.shapes import COLOURS, FAMILIES, ToyObject, filled, rotate_yaw, sample_object, without_seat

# Bumped whenever the shapes or their renders change, so a cached training set of older objects
# is rendered anew rather than silently reused (2: open-frame backs; 3: canonical pose, 4-view
# groups with their cameras).
DATA_VERSION = 3

# Views per group: the multi-view prior attends across the 4 views of an object, as MVDream does.
TOY_FRAMES = 4

# The camera ranges of the toy preset (configs/toy.yaml repeats them: the prior and the
# optimisation must see the same kind of views), in groups of TOY_FRAMES spread views.
TOY_CAMERA = CameraConfig(elevation_range=(0.0, 30.0), fov_range=(40.0, 50.0), distance_range=(2.6, 3.2),
                          views_per_step=TOY_FRAMES, view_group=TOY_FRAMES)


@dataclass
class DataConfig:
    """How the training set is drawn (``views_per_object``: a multiple of ``TOY_FRAMES``)."""

    resolution: int = 32
    views_per_object: int = TOY_FRAMES
    p_no_colour: float = 0.2
    p_empty: float = 0.1
    p_albedo_only: float = 0.2
    ambient: float = 0.3


@dataclass
class ToyImages:
    """Renders with their cameras and captions, in groups of ``TOY_FRAMES`` consecutive views.

    Attributes:
        images: ``[N, R, R, 3]`` uint8, top row first.
        angles: ``[N, 2]`` float32: each view's camera elevation and azimuth in degrees (our frame:
            azimuth 0 on +Z, the object's front).
        captions: ``N`` captions, the same for the views of a group.
    """

    images: torch.Tensor
    angles: torch.Tensor
    captions: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @staticmethod
    def cat(parts: list["ToyImages"]) -> "ToyImages":
        return ToyImages(torch.cat([p.images for p in parts]), torch.cat([p.angles for p in parts]),
                         [c for p in parts for c in p.captions])


def caption(family: str, colour: str | None) -> str:
    return f"a {colour} {family}" if colour else f"a {family}"


def render_object(obj: ToyObject, yaw_deg: float, generator: torch.Generator, cfg: DataConfig,
                  camera: CameraConfig = TOY_CAMERA) -> tuple[torch.Tensor, torch.Tensor]:
    """Renders of ``obj`` turned by ``yaw_deg`` about +Y (0 in the training data: canonical pose).

    Returns:
        ``cfg.views_per_object`` images ``[V, R, R, 3]`` in ``[0, 1]`` (top row first), in groups
        of ``camera.view_group`` spread views, and their cameras' ``[V, 2]`` elevation and azimuth.
    """
    cams = sample_cameras(camera, generator, cfg.views_per_object)
    verts = rotate_yaw(obj.verts, yaw_deg)
    albedo = torch.tensor(obj.albedo())
    # Small per-object albedo jitter: the colour word names a range, not one exact value.
    albedo = (albedo + 0.06 * (torch.rand(3, generator=generator) - 0.5)).clamp(0, 1)
    light = None if float(torch.rand((), generator=generator)) < cfg.p_albedo_only else random_light(cams, generator)
    big = render_mesh(verts, obj.faces, cams, 2 * cfg.resolution, color_fn=lambda p: albedo.expand(p.shape[0], 3),
                      light_dir=light, ambient=cfg.ambient, background=1.0).rgb
    images = F.avg_pool2d(big.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1).clamp(0, 1)
    return images, torch.stack([cams.elevation, cams.azimuth], -1).float()


def _uint8(images: torch.Tensor) -> torch.Tensor:
    return (images * 255).round().to(torch.uint8)


def make_dataset(n_objects: int, seed: int, cfg: DataConfig = DataConfig(),
                 families: tuple[str, ...] = FAMILIES) -> ToyImages:
    """``n_objects * cfg.views_per_object`` views of objects in canonical pose, one caption per group.

    Families and colours cycle evenly (then shuffle by the caption dropout draws), so every
    caption is well represented; everything is drawn from one seeded generator.
    """
    g = torch.Generator().manual_seed(seed)
    colours = list(COLOURS)
    parts = []
    for i in range(n_objects):
        family = families[i % len(families)]
        colour = colours[(i // len(families)) % len(colours)]
        imgs, angles = render_object(sample_object(family, g, colour), 0.0, g, cfg)
        captions = []
        for _ in range(imgs.shape[0] // TOY_FRAMES):
            r = float(torch.rand((), generator=g))
            text = "" if r < cfg.p_empty else caption(family, None if r < cfg.p_empty + cfg.p_no_colour else colour)
            captions += [text] * TOY_FRAMES
        parts.append(ToyImages(_uint8(imgs), angles, captions))
    return ToyImages.cat(parts)


def _render_variants(n_objects: int, seed: int, cfg: DataConfig, families: tuple[str, ...],
                     vary: Callable[[ToyObject, torch.Generator], ToyObject]) -> ToyImages:
    """Views of ``vary(object)`` in canonical pose, all captioned ``""``; families and colours
    cycle as in :func:`make_dataset`."""
    g = torch.Generator().manual_seed(seed)
    colours = list(COLOURS)
    parts = []
    for i in range(n_objects):
        family = families[i % len(families)]
        obj = vary(sample_object(family, g, colours[(i // len(families)) % len(colours)]), g)
        imgs, angles = render_object(obj, 0.0, g, cfg)
        parts.append(ToyImages(_uint8(imgs), angles, [""] * imgs.shape[0]))
    return ToyImages.cat(parts)


def make_near_misses(n_objects: int, seed: int, cfg: DataConfig = DataConfig(),
                     families: tuple[str, ...] = FAMILIES) -> ToyImages:
    """``n_objects * cfg.views_per_object`` views of filled objects, all captioned ``""``.

    The fill starts at a uniform height in ``[0, seat_h]`` for the families with a back (at
    ``seat_h`` a chair is the column) and in ``[0, 0.6 seat_h]`` for the others, whose fill at
    ``seat_h`` would be the object itself."""
    def fill(obj: ToyObject, g: torch.Generator) -> ToyObject:
        top = 1.0 if "back_h" in obj.params else 0.6
        return filled(obj, top * obj.params["seat_h"] * float(torch.rand((), generator=g)))

    return _render_variants(n_objects, seed, cfg, families, fill)


def make_seatless(n_objects: int, seed: int, cfg: DataConfig = DataConfig(),
                  families: tuple[str, ...] = FAMILIES) -> ToyImages:
    """``n_objects * cfg.views_per_object`` views of objects without their seat or top
    (``shapes.without_seat``: legs, and a back where there is one), all captioned ``""``.

    Without them a bare frame of legs explains a class word at least as well as the whole object
    does, relative to the unconditional model (``benchmarks/toy_prior_scores.py``): the seat, the
    part every family shares, earns no evidence, and SDS at a high guidance scale drops it."""
    return _render_variants(n_objects, seed, cfg, families, lambda obj, g: without_seat(obj))
