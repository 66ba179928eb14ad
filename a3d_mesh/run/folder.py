"""The run folder's layout, and the one place that reads and writes its records.

Run folder layout::

    RUN_DIR/config.yaml        the resolved configuration (what --resume uses)
    RUN_DIR/prompts.txt        the prompt set as parsed (name: prompt)
    RUN_DIR/checkpoints/       coarse.pt, refine.pt (atomic; resumable)
    RUN_DIR/models/            the trained set: dmtet/ and color/, each config.json + model.safetensors
    RUN_DIR/previews/          PNG turnarounds, set.png, transition GIFs
    RUN_DIR/export/            one file (or folder) per asset and format
    RUN_DIR/manifest.json      every asset with its code, files, counts and sha256
    RUN_DIR/index.html         the page that shows the set (and _viewer/, its script)
    RUN_DIR/edit.json          edit runs: the input, its repairs, the map back, --keep-input-frame
    RUN_DIR/input.ply          edit runs: the normalised input mesh (input_colors.npz: its colours)
    RUN_DIR/.a3d-mesh.lock     held by the one process working on the folder (a3d_mesh.runlock)

Training writes config, prompts, checkpoints and models; everything after training (export,
hybrids, previews, the manifest) reads the folder through this package only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from a3d_mesh.atomic import atomic_write_text
from a3d_mesh.config import RunConfig, dump_config, load_run_config
from a3d_mesh.errors import RunError
from a3d_mesh.export import SetTransform
from a3d_mesh.meshio import SurfaceColors
from a3d_mesh.prompts import PromptSet, load_prompts

CONFIG_FILE = "config.yaml"
PROMPTS_FILE = "prompts.txt"
CHECKPOINTS = "checkpoints"
MODELS = "models"
PREVIEWS_DIR = "previews"
EXPORT_DIR = "export"
MANIFEST_FILE = "manifest.json"
EDIT_FILE = "edit.json"
INPUT_FILE = "input.ply"
INPUT_COLORS = "input_colors.npz"  # the input's own colours as surface samples (only when it has colour)


def read_run(run_dir: Path) -> tuple[PromptSet, RunConfig]:
    """The prompts and configuration a run was started with (``RunError`` when it has none)."""
    run_dir = Path(run_dir)
    for need in (CONFIG_FILE, PROMPTS_FILE):
        if not (run_dir / need).exists():
            raise RunError(f"{run_dir} is not a trained run (missing {need})")
    cfg = load_run_config(run_dir / CONFIG_FILE)
    g = cfg.guidance
    return load_prompts(run_dir / PROMPTS_FILE, g.negative_prompt, g.negate_other_prompts), cfg


def started_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a started run that ``run --resume`` continues (its saved config
    and prompts; a run killed before its first checkpoint restarts its first stage)."""
    return (Path(run_dir) / CONFIG_FILE).is_file() and (Path(run_dir) / PROMPTS_FILE).is_file()


def checkpoint_files(run_dir: Path) -> list[str]:
    """The run's checkpoint files, sorted (not the hidden temporary file of a write in flight)."""
    d = Path(run_dir) / CHECKPOINTS
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if p.suffix == ".pt" and not p.name.startswith("."))


def prepare_run_dir(out: Path, prompts: PromptSet | None, cfg: RunConfig | None, resume: bool) -> tuple[PromptSet, RunConfig]:
    """Create a new run folder, or read an existing one back for ``--resume``."""
    ckpts = out / CHECKPOINTS
    if resume:
        if not (out / CONFIG_FILE).exists():
            raise RunError(f"nothing to resume in {out} (no {CONFIG_FILE}); start it without --resume")
        saved, saved_cfg = read_run(out)
        if prompts is not None and (prompts.names, prompts.prompts) != (saved.names, saved.prompts):
            raise RunError(f"the prompts differ from those of the run in {out}; resume with the same prompt file")
        return saved, saved_cfg
    assert prompts is not None and cfg is not None
    if ckpts.exists() and any(ckpts.iterdir()):
        raise RunError(f"{out} already holds a run; continue it with --resume or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / CONFIG_FILE, dump_config(cfg))
    atomic_write_text(out / PROMPTS_FILE, prompts.to_text())
    return prompts, cfg


def write_edit_info(run_dir: Path, info: dict[str, Any]) -> Path:
    """Record an edit run's input, repairs, map back and frame choice (``edit.json``)."""
    return atomic_write_text(Path(run_dir) / EDIT_FILE, json.dumps(info, indent=2) + "\n")


def read_edit_info(run_dir: Path) -> dict[str, Any] | None:
    """The run folder's ``edit.json`` record, or None for a run that is not an edit."""
    path = Path(run_dir) / EDIT_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def export_transform(info: dict[str, Any] | None) -> SetTransform | None:
    """The export frame an edit run asked for: the input's own (``--keep-input-frame``), else None
    (the set's usual metre frame). Every asset of the run, hybrids added later included, uses it."""
    if info and info.get("keep_input_frame"):
        return SetTransform.from_dict(info["input_frame"])
    return None


def load_input_colors(run_dir: Path) -> SurfaceColors | None:
    """The saved input's colours (set frame), or None when the input had none."""
    path = Path(run_dir) / INPUT_COLORS
    if not path.exists():
        return None
    with np.load(path) as z:
        return SurfaceColors(z["points"], z["colors"].astype(np.float32) / 255.0)
