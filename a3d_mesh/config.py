"""Typed run configuration: one dataclass per component, YAML presets, dot-list overrides.

A preset (``configs/<name>.yaml`` or any YAML path) is a partial nested mapping applied over the
dataclass defaults; overrides like ``refine.steps=300`` are applied after it. Every key and every
value is validated against the dataclass types: an unknown key or a mistyped value raises
:class:`ConfigError` with a one-line message that names the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from a3d_mesh.cameras import CameraConfig
from a3d_mesh.config_ranges import first_problem, format_problem
from a3d_mesh.config_types import ConfigError, load_yaml, merge, parse_override, to_dict
from a3d_mesh.fields import HashGridConfig
from a3d_mesh.guidance import SDSConfig
from a3d_mesh.guidance.schedule import Ramp
from a3d_mesh.guidance.views import ViewPromptConfig
from a3d_mesh.simplex import CodeSamplingConfig


@dataclass
class GuidanceConfig:
    """Where gradients come from: a diffusion prior (SDS) or known target meshes (``images``)."""

    kind: Literal["sds", "images"] = "sds"
    # A known prior ("sd-2.1-base": SD 2.1 base from the first of its hub mirrors in the local cache,
    # see a3d_mesh/guidance/sources.py), a hub id, a local diffusers folder, "toy" or "tiny".
    model: str = "sd-2.1-base"
    # Multi-view (MVDream) priors are detected from the model itself ("mvdream-sd2.1",
    # "tiny-mvdream", an original .pt/.safetensors checkpoint or a folder whose UNet is multi-view;
    # docs/mvdream.md). A single-file checkpoint holds only the UNet: this SD model gives its
    # tokenizer, text encoder, VAE and scheduler (MVDream kept SD 2.1 base's frozen).
    base_model: str = "sd-2.1-base"
    negative_prompt: str = ""
    # Add the other prompts' subjects to each negative (method note, section 2). Off for a prior
    # that never saw such captions: the toy prior knows only "a {colour} {family}" and "", and a
    # negative "blue bench, green table" is off its training data; at guidance scale 30 that
    # noise made a chair a solid column and a table a block (docs/toy-joint-negatives.png).
    negate_other_prompts: bool = True
    # View-dependent prompting ("{prompt}, back view" for a camera behind the object; an object's
    # front faces +Z): against the Janus problem. Off for priors without view words in their
    # captions (the toy prior) and for multi-view priors. See a3d_mesh/guidance/views.py.
    view_prompts: ViewPromptConfig = field(default_factory=ViewPromptConfig)
    # kind = images: one mesh file per prompt (OBJ/PLY/GLB), in the set's world frame.
    targets: list[str] = field(default_factory=list)
    target_weight_mask: float = 1.0
    target_weight_normal: float = 0.1
    # Silhouettes (mask, rgb edges) constrain a surface only where some view ray grazes it, so a
    # flat face's position comes from depth alone. The depth term is an L1 error (world units):
    # squared, a face a few hundredths off got a vanishing pull and the box target of issue 6
    # stayed ~0.06 too large on every side (IoU 0.79); L1 at weight 1 brings it to 0.997.
    target_weight_depth: float = 1.0


@dataclass
class CoarseConfig:
    """Stage 1: the latent-conditioned NeRF (volume rendered, low resolution)."""

    steps: int = 5000
    resolution: int = 64
    samples_per_ray: int = 64
    grid: HashGridConfig = field(default_factory=HashGridConfig)
    hidden: int = 64
    lr_grid: float = 1e-2
    lr_mlp: float = 1e-3
    blob_density: float = 10.0
    blob_radius: float = 0.5
    occupancy_resolution: int = 32
    occupancy_every: int = 16
    occupancy_threshold: float = 0.01
    # Orientation loss weight, a schedule of the stage's progress like every other (a number,
    # [start, end], [start, end, begin, finish]): 10 -> 1000 over the first tenth of the stage.
    orientation_weight: Ramp = field(default_factory=lambda: Ramp(10.0, 1000.0, 0.0, 0.1))
    opacity_weight: float = 0.0
    # Every view of the step's code must cover at least `min_opacity` of its pixels on average, or
    # pay `min_opacity_weight` per unit short (0 = off). In a joint run an object that SDS empties
    # early gets no gradient back and stays empty; the hinge is idle for any object that shows.
    min_opacity: float = 0.0
    min_opacity_weight: float = 0.0
    albedo_only_prob: float = 0.2
    sds: SDSConfig = field(default_factory=SDSConfig)


@dataclass
class RefineConfig:
    """Stage 2: the shared DMTet grid, rasterised at high resolution."""

    steps: int = 5000
    resolution: int = 512
    tet_resolution: int = 128
    grid: HashGridConfig = field(default_factory=HashGridConfig)
    hidden: int = 64
    lr: float = 1e-2
    lr_color: float = 1e-3
    normal_consistency_weight: float = 1e4
    laplacian_weight: float = 0.0
    sdf_entropy_weight: float = 0.0
    # NeRF -> DMTet hand-off: "auto" picks each object's density level from its silhouettes, the
    # pixels where the NeRF's opacity exceeds `init_opacity` (lower keeps faint thin parts); a
    # number fixes one density level for every object.
    init_threshold: float | Literal["auto"] = "auto"
    init_opacity: float = 0.5
    init_steps: int = 1000
    init_views: int = 8
    # The coarse stage's floor on the mesh renders' coverage (0 = off): SDS can shrink a small
    # object of a joint run to nothing here too, and an empty mesh gets no gradient back.
    min_opacity: float = 0.0
    min_opacity_weight: float = 0.0
    sds: SDSConfig = field(default_factory=lambda: SDSConfig())


@dataclass
class ExportConfig:
    formats: list[str] = field(default_factory=lambda: ["glb"])
    texture_size: int = 1024
    target_faces: int | None = None
    height_m: float = 1.0
    uv_timeout_s: float = 120.0
    # Cleanup drops connected components whose area is under this fraction of the largest
    # component's (floating debris); 0 keeps every piece. See a3d_mesh.export.cleanup.
    min_component_area: float = 0.03
    # Grounding (a3d_mesh.export.frame): "each" puts every asset's own lowest point on y = 0 (the
    # set's scale and x/z kept; the manifest's ground_offset_m reassembles the set); "set" puts
    # only the whole set's lowest point there, so objects keep their heights within the set.
    ground: Literal["each", "set"] = "each"
    # Also bake a tangent-space normal map from the full-resolution mesh (worth it with a face
    # budget: the detail decimation removed comes back as shading); GLB, OBJ, USDZ and FBX carry it.
    normal_map: bool = False


@dataclass
class PreviewConfig:
    resolution: int = 256
    views: int = 4
    sweep_frames: int = 9


@dataclass
class RunConfig:
    """Everything one run needs besides the prompts."""

    seed: int = 0
    device: str = "auto"
    bound: float = 1.0
    checkpoint_every: int = 200
    # Preflight (a3d_mesh.preflight): an accelerator (nvdiffrast, tinycudann, kaolin) that fails its
    # tiny check is replaced by the torch reference with a warning; true makes that an error (exit
    # 1) for runs that must not silently run slower. A3D_STRICT_BACKENDS=1 turns it on too.
    strict_backends: bool = False
    # generate: a set from prompts. edit: object 0 is the input mesh saved in the run folder
    # (a3d-mesh edit sets it), pinned by a reconstruction loss; the refine stage starts from it.
    mode: Literal["generate", "edit"] = "generate"
    camera: CameraConfig = field(default_factory=CameraConfig)
    sampling: CodeSamplingConfig = field(default_factory=CodeSamplingConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    coarse: CoarseConfig = field(default_factory=CoarseConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    preview: PreviewConfig = field(default_factory=PreviewConfig)


def preset_names() -> list[str]:
    """Names of the bundled presets (``configs/*.yaml``)."""
    return sorted(p.name[:-5] for p in resources.files("a3d_mesh_configs").iterdir() if p.name.endswith(".yaml"))


def is_preset_path(preset: str) -> bool:
    """True when ``preset`` names a file (a path separator, or a .yaml/.yml ending), False for a
    bundled preset name. A bare name is always the bundled preset, so a file or folder called
    ``toy`` in the working directory cannot shadow it; ``./toy`` means the file."""
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return preset.endswith((".yaml", ".yml")) or any(s in preset for s in seps)


def _read_preset(preset: str) -> dict[str, Any]:
    if is_preset_path(preset):
        path = Path(preset)
        if not path.exists():
            stem = path.name.rsplit(".", 1)[0]
            hint = f" (the bundled one is --preset {stem})" if stem in preset_names() else ""
            raise ConfigError(f"preset file not found: {preset}{hint}")
        if not path.is_file():
            raise ConfigError(f"preset {preset} is not a file")
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read preset {preset}: {e.strerror or e}") from None
    else:
        res = resources.files("a3d_mesh_configs") / f"{preset}.yaml"
        if not res.is_file():
            local = f"; for the file in this folder write ./{preset}" if Path(preset).is_file() else ""
            raise ConfigError(f"unknown preset '{preset}' (available: {', '.join(preset_names())}){local}")
        raw = res.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"preset '{preset}' is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    try:
        data = load_yaml(text) or {}
    except (yaml.YAMLError, ValueError) as e:  # ValueError: an int past Python's 4300 digits
        raise ConfigError(f"preset '{preset}' is not valid YAML: {str(e).splitlines()[0]}") from None
    except RecursionError:
        raise ConfigError(f"preset '{preset}' is not valid YAML: nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"preset '{preset}' must be a YAML mapping")
    return data


def load_config(preset: str = "default", overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """The preset applied over the defaults, then each ``key=value`` override, all validated.

    A bad value read from a preset file (a run's ``config.yaml`` too) is reported with the file's
    name when no override could be the culprit: that file is what the user has to fix."""
    return _from_data(_read_preset(preset), preset, overrides)


def load_run_config(path: Path) -> RunConfig:
    """A run folder's saved ``config.yaml`` (what ``--resume``, ``export`` and ``hybrid`` use).

    A run saved before a setting existed keeps the behaviour it was made with, so that resuming
    it stays exact and its later exports match its earlier ones: runs made before view-dependent
    prompts (no ``guidance.view_prompts`` saved) go on without them, and runs made before per-asset
    grounding (no ``export.ground``) keep the set's one ground (``set``). Older spellings are read
    in today's form: ``guidance.pin_input`` becomes ``mode: edit``, ``coarse.orientation_ramp`` (steps) becomes the ``orientation_weight`` ramp's
    window, ``refine.init_threshold`` saved as a string becomes a number.
    """
    data = _read_preset(str(path))
    for section, key, then in (("guidance", "view_prompts", {"enabled": False}), ("export", "ground", "set")):
        part = data.get(section)
        if isinstance(part, dict) and key not in part:
            part[key] = then
    guidance, coarse, refine = data.get("guidance"), data.get("coarse"), data.get("refine")
    if isinstance(guidance, dict) and "pin_input" in guidance:  # the edit mode's old spelling
        data.setdefault("mode", "edit" if guidance.pop("pin_input") else "generate")
    if isinstance(coarse, dict) and "orientation_ramp" in coarse:
        steps = coarse.get("steps", CoarseConfig.steps)
        start, end = coarse.get("orientation_weight", (10.0, 1000.0))
        finish = min(1.0, coarse.pop("orientation_ramp") / max(steps, 1)) if isinstance(steps, int) else 1.0
        coarse["orientation_weight"] = [start, end, 0.0, finish]
    if isinstance(refine, dict) and isinstance(refine.get("init_threshold"), str) and refine["init_threshold"] != "auto":
        try:
            refine["init_threshold"] = float(refine["init_threshold"])
        except ValueError:
            pass  # reported by the type check, naming the key
    return _from_data(data, str(path), ())


def _from_data(data: dict[str, Any], preset: str, overrides: list[str] | tuple[str, ...]) -> RunConfig:
    """``load_config`` on preset data already read from ``preset``."""
    try:
        cfg = merge(RunConfig(), data)
        if not overrides:
            validate(cfg)
            return cfg
    except ConfigError as e:
        raise (ConfigError(f"{e} (in {preset})") if is_preset_path(preset) else e) from None
    for o in overrides:
        cfg = merge(cfg, parse_override(o))
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Range checks the types cannot express (:mod:`a3d_mesh.config_ranges`, then the facts that
    span keys), all before anything is written. Raises :class:`ConfigError` naming the key, the
    allowed range and the value."""
    problem = first_problem(cfg)
    if problem:
        raise ConfigError(problem)
    s = cfg.sampling
    if abs(s.p_corner_i + s.p_corner_j + s.p_interior - 1) >= 1e-6:
        raise ConfigError(f"config keys sampling.p_corner_i, p_corner_j and p_interior must sum to 1, got "
                          f"{s.p_corner_i:g} + {s.p_corner_j:g} + {s.p_interior:g}")
    if not (cfg.device in ("auto", "cpu") or cfg.device.startswith("cuda")):
        raise ConfigError(f"config key device must be auto, cpu or cuda[:N], got {cfg.device!r}")
    problem = format_problem(cfg.export.formats, "export.formats")
    if problem:
        raise ConfigError(problem)


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
