"""One run, end to end: prompts -> guidance; coarse NeRF -> DMTet refine -> previews -> export -> manifest.

Run folder layout::

    RUN_DIR/config.yaml        the resolved configuration (what --resume uses)
    RUN_DIR/prompts.txt        the prompt set as parsed (name: prompt)
    RUN_DIR/checkpoints/       coarse.pt, refine.pt (atomic; resumable)
    RUN_DIR/previews/          PNG turnarounds, set.png, transition GIFs
    RUN_DIR/export/            one file (or folder) per asset and format
    RUN_DIR/manifest.json      every asset with its code, files, counts and sha256
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from a3d_mesh.assets import (RunError, TrainedSet, export_set, hybrid_items, resolve_device, write_manifest,
                             write_previews)
from a3d_mesh.config import RunConfig, dump_config, load_config
from a3d_mesh.export.atomic import atomic_write_text
from a3d_mesh.hybrid import HybridSpec
from a3d_mesh.guidance import SDSGuidance, encode_prompts, load_components
from a3d_mesh.prompts import PromptSet, load_prompts
from a3d_mesh.train.coarse import CoarseStage
from a3d_mesh.train.guide import Guide, ImageTargetGuide, SDSGuide
from a3d_mesh.train.loop import Progress, atomic_torch_save, run_stage
from a3d_mesh.train.refine import RefineStage


def build_guides(cfg: RunConfig, prompts: PromptSet, device: torch.device, progress: Progress) -> tuple[Guide, Guide]:
    """The coarse and refine stages' guides (they share one model and one embedding cache)."""
    if cfg.guidance.kind == "images":
        g = ImageTargetGuide.from_files(cfg.guidance.targets, prompts, cfg.guidance.target_weight_mask)
        return g, g
    progress.message(f"[guidance] loading {cfg.guidance.model} on {device}")
    comps = load_components(cfg.guidance.model, device)
    emb = encode_prompts(comps, prompts.prompts, prompts.negatives)
    return (SDSGuide(SDSGuidance(comps, emb, cfg.coarse.sds, seed=cfg.seed)),
            SDSGuide(SDSGuidance(comps, emb, cfg.refine.sds, seed=cfg.seed + 1)))


def prepare_run_dir(out: Path, prompts: PromptSet | None, cfg: RunConfig | None, resume: bool) -> tuple[PromptSet, RunConfig]:
    """Create a new run folder, or read an existing one back for ``--resume``."""
    ckpts = out / "checkpoints"
    if resume:
        if not (out / "config.yaml").exists():
            raise RunError(f"nothing to resume in {out} (no config.yaml); start it without --resume")
        saved_cfg = load_config(str(out / "config.yaml"))
        saved = load_prompts(out / "prompts.txt", saved_cfg.guidance.negative_prompt)
        if prompts is not None and (prompts.names, prompts.prompts) != (saved.names, saved.prompts):
            raise RunError(f"the prompts differ from those of the run in {out}; resume with the same prompt file")
        return saved, saved_cfg
    assert prompts is not None and cfg is not None
    if ckpts.exists() and any(ckpts.iterdir()):
        raise RunError(f"{out} already holds a run; continue it with --resume or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    atomic_write_text(out / "prompts.txt", prompts.to_text())
    return prompts, cfg


def train(prompts: PromptSet, cfg: RunConfig, out: Path, progress: Progress) -> None:
    """Both stages, each resumed from its checkpoint when there is one."""
    device = resolve_device(cfg.device)
    ckpts = out / "checkpoints"
    guide_c, guide_r = build_guides(cfg, prompts, device, progress)
    torch.manual_seed(cfg.seed)
    coarse = CoarseStage(cfg, len(prompts), guide_c, device)
    run_stage(coarse, ckpts / "coarse.pt", cfg.checkpoint_every, progress)
    torch.manual_seed(cfg.seed + 1)
    refine = RefineStage(cfg, len(prompts), guide_r, coarse.field, coarse.background, device)
    if not (ckpts / "refine.pt").exists():
        progress.message("[refine] initialising the shared DMTet grid from the coarse NeRF")
        refine.initialise(progress.message)
        atomic_torch_save({"step": 0, "stage": refine.state_dict()}, ckpts / "refine.pt")
    run_stage(refine, ckpts / "refine.pt", cfg.checkpoint_every, progress)


def run(out: Path, prompts: PromptSet | None = None, cfg: RunConfig | None = None, resume: bool = False,
        progress: Progress | None = None, hybrids: Callable[[PromptSet, RunConfig], list[HybridSpec]] | None = None) -> Path:
    """Train (or resume) a set, then write previews, exports and the manifest; returns the manifest path.

    ``hybrids`` turns the run's prompts and config into hybrid specs; it is called before any
    training so that a bad spec fails at once.
    """
    progress = progress or Progress()
    if prompts is not None and cfg is not None and hybrids is not None:
        hybrids(prompts, cfg)  # validate before anything is written
    prompts, cfg = prepare_run_dir(out, prompts, cfg, resume)
    specs = hybrids(prompts, cfg) if hybrids is not None else []
    progress.message(f"[run] {len(prompts)} object(s): {', '.join(prompts.names)} -> {out}")
    train(prompts, cfg, out, progress)
    ts = TrainedSet.load(out)
    previews = write_previews(ts, out / "previews", specs)
    progress.message(f"[previews] {len(previews)} files in {out / 'previews'}")
    assets = export_set(ts, out / "export", extra=hybrid_items(ts, specs), log=progress.message)
    manifest = write_manifest(out, ts, assets, previews)
    progress.message(f"[done] {len(assets)} asset(s); manifest {manifest}")
    return manifest
