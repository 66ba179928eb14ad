"""Training images of the toy world: procedural objects at a random yaw, rendered with our rasteriser.

Each image shows one object (``shapes.sample_object``) turned about +Y by a uniformly random yaw,
so the prior learns no canonical orientation: that is what makes independent text-to-3D runs land
at arbitrary yaws, and what A3D's joint generation has to overcome. Cameras are drawn from the
same ``CameraConfig`` ranges the toy preset trains with, lit by ``random_light`` with the
renderer's ambient + diffuse shading (or unlit albedo, as the coarse stage sometimes renders),
over a white background. Images are rendered at twice the size and box-filtered down, which is
a clean antialias for the small sizes used here.

Captions: ``"a {colour} {family}"``, sometimes just ``"a {family}"``, and ``""`` (the
unconditional caption that classifier-free guidance needs).

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
# is rendered anew rather than silently reused (2: open-frame backs).
DATA_VERSION = 2

# The camera ranges of the toy preset (configs/toy.yaml repeats them: the prior and the
# optimisation must see the same kind of views).
TOY_CAMERA = CameraConfig(elevation_range=(0.0, 30.0), fov_range=(40.0, 50.0), distance_range=(2.6, 3.2),
                          views_per_step=4)


@dataclass
class DataConfig:
    """How the training set is drawn."""

    resolution: int = 32
    views_per_object: int = 4
    p_no_colour: float = 0.2
    p_empty: float = 0.1
    p_albedo_only: float = 0.2
    ambient: float = 0.3


def caption(family: str, colour: str | None) -> str:
    return f"a {colour} {family}" if colour else f"a {family}"


def render_object(obj: ToyObject, yaw_deg: float, generator: torch.Generator, cfg: DataConfig,
                  camera: CameraConfig = TOY_CAMERA) -> torch.Tensor:
    """``cfg.views_per_object`` renders [V, R, R, 3] in [0, 1] (top row first) of ``obj`` turned by ``yaw_deg``."""
    cams = sample_cameras(camera, generator, cfg.views_per_object)
    verts = rotate_yaw(obj.verts, yaw_deg)
    albedo = torch.tensor(obj.albedo())
    # Small per-object albedo jitter: the colour word names a range, not one exact value.
    albedo = (albedo + 0.06 * (torch.rand(3, generator=generator) - 0.5)).clamp(0, 1)
    light = None if float(torch.rand((), generator=generator)) < cfg.p_albedo_only else random_light(cams, generator)
    big = render_mesh(verts, obj.faces, cams, 2 * cfg.resolution, color_fn=lambda p: albedo.expand(p.shape[0], 3),
                      light_dir=light, ambient=cfg.ambient, background=1.0).rgb
    return F.avg_pool2d(big.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1).clamp(0, 1)


def make_dataset(n_objects: int, seed: int, cfg: DataConfig = DataConfig(),
                 families: tuple[str, ...] = FAMILIES) -> tuple[torch.Tensor, list[str]]:
    """``n_objects * cfg.views_per_object`` images as uint8 [N, R, R, 3] with one caption each.

    Families and colours cycle evenly (then shuffle by the caption dropout draws), so every
    caption is well represented; everything is drawn from one seeded generator.
    """
    g = torch.Generator().manual_seed(seed)
    colours = list(COLOURS)
    images, captions = [], []
    for i in range(n_objects):
        family = families[i % len(families)]
        colour = colours[(i // len(families)) % len(colours)]
        obj = sample_object(family, g, colour)
        yaw = float(torch.rand((), generator=g)) * 360.0
        imgs = render_object(obj, yaw, g, cfg)
        for _ in range(imgs.shape[0]):
            r = float(torch.rand((), generator=g))
            if r < cfg.p_empty:
                captions.append("")
            elif r < cfg.p_empty + cfg.p_no_colour:
                captions.append(caption(family, None))
            else:
                captions.append(caption(family, colour))
        images.append((imgs * 255).round().to(torch.uint8))
    return torch.cat(images), captions


def _render_variants(n_objects: int, seed: int, cfg: DataConfig, families: tuple[str, ...],
                     vary: Callable[[ToyObject, torch.Generator], ToyObject]) -> torch.Tensor:
    """``n_objects * cfg.views_per_object`` uint8 renders [N, R, R, 3] of ``vary(object)``, each object
    at a random yaw; families and colours cycle as in :func:`make_dataset`."""
    g = torch.Generator().manual_seed(seed)
    colours = list(COLOURS)
    images = []
    for i in range(n_objects):
        family = families[i % len(families)]
        obj = vary(sample_object(family, g, colours[(i // len(families)) % len(colours)]), g)
        imgs = render_object(obj, float(torch.rand((), generator=g)) * 360.0, g, cfg)
        images.append((imgs * 255).round().to(torch.uint8))
    return torch.cat(images)


def make_near_misses(n_objects: int, seed: int, cfg: DataConfig = DataConfig(),
                     families: tuple[str, ...] = FAMILIES) -> torch.Tensor:
    """``n_objects * cfg.views_per_object`` renders (uint8 [N, R, R, 3]) of filled objects, all captioned ``""``.

    The fill starts at a uniform height in ``[0, seat_h]`` for the families with a back (at
    ``seat_h`` a chair is the column) and in ``[0, 0.6 seat_h]`` for the others, whose fill at
    ``seat_h`` would be the object itself."""
    def fill(obj: ToyObject, g: torch.Generator) -> ToyObject:
        top = 1.0 if "back_h" in obj.params else 0.6
        return filled(obj, top * obj.params["seat_h"] * float(torch.rand((), generator=g)))

    return _render_variants(n_objects, seed, cfg, families, fill)


def make_seatless(n_objects: int, seed: int, cfg: DataConfig = DataConfig(),
                  families: tuple[str, ...] = FAMILIES) -> torch.Tensor:
    """``n_objects * cfg.views_per_object`` renders (uint8 [N, R, R, 3]) of objects without their seat
    or top (``shapes.without_seat``: legs, and a back where there is one), all captioned ``""``.

    Without them a bare frame of legs explains a class word at least as well as the whole object
    does, relative to the unconditional model (``benchmarks/toy_prior_scores.py``): the seat, the
    part every family shares, earns no evidence, and SDS at a high guidance scale drops it."""
    return _render_variants(n_objects, seed, cfg, families, lambda obj, g: without_seat(obj))
