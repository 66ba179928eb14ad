"""View-dependent prompting: a view word per rendered camera, so SDS does not paint a front everywhere.

A text-to-image prior asked for "a dog" paints the dog's face on every side of the object (the
Janus problem). DreamFusion and threestudio append a view word chosen by the camera's direction,
"a dog, back view", and this module does the same with threestudio's defaults:

- **overhead** when elevation > ``overhead_threshold`` (60 deg), whatever the azimuth;
- else **front** when ``|azimuth| < front_threshold`` (45 deg);
- else **back** when ``|azimuth| > 180 - back_threshold`` (beyond 135 deg);
- else **side** (both sides share the word).

Bounds are strict, as in threestudio: a camera at exactly 45 deg azimuth is "side", one at exactly
60 deg elevation is not "overhead". Azimuths are wrapped into ``[-180, 180)`` first.

Which side is the front: our frame (docs/conventions.md) puts azimuth 0 on the +Z axis, so the
"front view" camera looks at the object from +Z: **an object's front faces +Z** and its back
faces -Z (threestudio's azimuth 0 is its +X axis, so the same thresholds mean the same views, in
its frame). Previews start at azimuth 0, i.e. they open on the front.

The prompt text of view ``v`` is ``template.format(prompt=..., view=word_v)``, by default
``"{prompt}, {view} view"``; negatives use ``negative_template`` (default ``"{negative}"``: the
same negative for every view, as threestudio does). Priors whose captions never carry view words
turn this off (``enabled: false``): the bundled toy prior (captions "a {colour} {family}" and
""), and multi-view priors, which take the camera itself as input.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import torch

# The order of the view axis of the embedding tables (index v of ``PromptEmbeddings.cond_views``).
VIEWS = ("front", "side", "back", "overhead")
FRONT, SIDE, BACK, OVERHEAD = range(len(VIEWS))


def _fields(template: str) -> set[str]:
    """The ``{name}`` fields of a format string (ValueError for a malformed one)."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


@dataclass
class ViewPromptConfig:
    """How the view word is chosen and written (plain data; ``guidance.view_prompts`` in presets).

    Attributes:
        enabled: append view words (off: one plain embedding per prompt, V = 1).
        front_threshold: degrees of azimuth either side of 0 (the +Z side) that are "front".
        back_threshold: degrees of azimuth either side of 180 (the -Z side) that are "back".
        overhead_threshold: elevation in degrees above which a camera is "overhead".
        front, side, back, overhead: the words put into the template for each view.
        template: the prompt text of a view, with ``{prompt}`` and ``{view}`` fields.
        negative_template: the negative text of a view, with ``{negative}`` and optionally
            ``{view}`` fields.
    """

    enabled: bool = True
    front_threshold: float = 45.0
    back_threshold: float = 45.0
    overhead_threshold: float = 60.0
    front: str = "front"
    side: str = "side"
    back: str = "back"
    overhead: str = "overhead"
    template: str = "{prompt}, {view} view"
    negative_template: str = "{negative}"

    def __post_init__(self) -> None:
        for name in ("front_threshold", "back_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 180.0:
                raise ValueError(f"view_prompts.{name} must be in [0, 180] degrees, got {value}")
        if not -90.0 <= self.overhead_threshold <= 90.0:
            raise ValueError("view_prompts.overhead_threshold must be in [-90, 90] degrees, "
                             f"got {self.overhead_threshold}")
        for name, needed, allowed in (("template", {"prompt"}, {"prompt", "view"}),
                                      ("negative_template", {"negative"}, {"negative", "view"})):
            text = getattr(self, name)
            try:
                found = _fields(text)
            except ValueError:
                raise ValueError(f"view_prompts.{name} {text!r} is not a valid template (unbalanced braces?)") from None
            if not needed <= found or not found <= allowed:
                names = " and ".join("{" + f + "}" for f in sorted(allowed))
                raise ValueError(f"view_prompts.{name} {text!r} may use only {names}, and must use {{{min(needed)}}}")

    @property
    def words(self) -> tuple[str, ...]:
        """The view words in ``VIEWS`` order."""
        return tuple(getattr(self, v) for v in VIEWS)


def wrap_azimuth(azimuth: torch.Tensor) -> torch.Tensor:
    """Azimuths in degrees wrapped into ``[-180, 180)`` (any shape)."""
    return torch.remainder(azimuth + 180.0, 360.0) - 180.0


def view_index(cfg: ViewPromptConfig | None, elevation: torch.Tensor, azimuth: torch.Tensor) -> torch.Tensor:
    """The view of each camera: ``[B]`` int64 indices into ``VIEWS`` (all 0 when view prompting is off).

    Args:
        cfg: the rule; ``None`` or ``enabled=False`` means one view (index 0 for every camera).
        elevation: ``[B]`` degrees up from the XZ plane.
        azimuth: ``[B]`` degrees about +Y, 0 on the +Z axis, growing towards +X (any range).

    Returns:
        ``[B]`` int64 on ``elevation``'s device.
    """
    idx = torch.zeros(elevation.shape, dtype=torch.int64, device=elevation.device)
    if cfg is None or not cfg.enabled:
        return idx
    az = wrap_azimuth(azimuth.to(elevation.device).float())
    # Later rules win, as in threestudio: overhead over back over front over side.
    idx.fill_(SIDE)
    idx[az.abs() < cfg.front_threshold] = FRONT
    idx[az.abs() > 180.0 - cfg.back_threshold] = BACK
    idx[elevation.float() > cfg.overhead_threshold] = OVERHEAD
    return idx


def num_views(cfg: ViewPromptConfig | None) -> int:
    """V: the number of rows of the view axis (1 when off)."""
    return len(VIEWS) if cfg is not None and cfg.enabled else 1


def prompt_texts(cfg: ViewPromptConfig | None, prompt: str) -> list[str]:
    """The V texts encoded for ``prompt``, in view order (``[prompt]`` itself when off)."""
    if cfg is None or not cfg.enabled:
        return [prompt]
    return [cfg.template.format(prompt=prompt, view=word) for word in cfg.words]


def negative_texts(cfg: ViewPromptConfig | None, negative: str) -> list[str]:
    """The V negative texts encoded for ``negative``, in view order (``[negative]`` when off)."""
    if cfg is None or not cfg.enabled:
        return [negative]
    return [cfg.negative_template.format(negative=negative, view=word) for word in cfg.words]
