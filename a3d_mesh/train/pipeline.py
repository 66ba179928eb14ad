"""One run, end to end: prompts -> guidance; coarse NeRF -> DMTet refine -> models -> finish.

The run folder (its layout, records and models) is :mod:`a3d_mesh.run`'s; training writes its
inputs, checkpoints and trained models there and then hands over to :func:`a3d_mesh.run.finish_run`
for previews, exports and the manifest.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import torch

from a3d_mesh.config import ConfigError, RunConfig
from a3d_mesh.errors import RunError
from a3d_mesh.hybrid import HybridSpec
from a3d_mesh.prompts import PromptSet, negative_prompts
from a3d_mesh.render.shading import Background
from a3d_mesh.runlock import run_lock
from a3d_mesh.run import (HybridAsset, TrainedSet, color_field, finish_run, prepare_run_dir, resolve_device,
                          save_models)
from a3d_mesh.run.folder import INPUT_FILE, load_input_colors, write_edit_info
from a3d_mesh.train.coarse import CoarseStage
from a3d_mesh.train.edit import PinnedGuide, prepare_input, save_input
from a3d_mesh.train.finetune import tuned_hybrid_assets
from a3d_mesh.meshio import load_mesh
from a3d_mesh.train.guide import Guide, ImageTargetGuide, PriorGuide, load_prior
from a3d_mesh.checkpoint import atomic_torch_save
from a3d_mesh.progress import Progress
from a3d_mesh.train.loop import run_stage
from a3d_mesh.train.refine import RefineStage


def build_guides(cfg: RunConfig, prompts: PromptSet, device: torch.device, progress: Progress,
                 run_dir: Path) -> tuple[Guide, Guide]:
    """The coarse and refine stages' guides (they share one model and one embedding cache).

    Edit runs (``mode: edit``) wrap the refine guide so that e_0 reconstructs the input.
    """
    g = cfg.guidance
    weights = dict(mask_weight=g.target_weight_mask, normal_weight=g.target_weight_normal,
                   depth_weight=g.target_weight_depth)
    pinned = load_mesh(run_dir / INPUT_FILE) if cfg.mode == "edit" else None
    if g.kind == "images":
        if pinned is not None:  # targets name the prompts after the input
            if len(g.targets) != len(prompts) - 1:
                raise ValueError(f"guidance.targets lists {len(g.targets)} meshes for {len(prompts) - 1} prompts")
            meshes = [pinned] + [load_mesh(t) for t in g.targets]
            guide: Guide = ImageTargetGuide(meshes, **weights)
        else:
            guide = ImageTargetGuide.from_files(g.targets, prompts, **weights)
        guide_c = guide_r = guide
    else:
        prior = load_prior(cfg, prompts, device, progress.message)
        guide_c = PriorGuide(prior(cfg.coarse.sds, cfg.seed))
        guide_r = PriorGuide(prior(cfg.refine.sds, cfg.seed + 1))
    if pinned is not None:  # in the input's own colours when it has them, else a flat one
        colors = load_input_colors(run_dir)
        guide_r = PinnedGuide(ImageTargetGuide([pinned], **weights, colors=None if colors is None else [colors]), guide_r)
    return guide_c, guide_r


def train(prompts: PromptSet, cfg: RunConfig, out: Path, progress: Progress) -> None:
    """Both stages (edit runs: refine only, from the input mesh), each resumed from its checkpoint.

    Every backend is checked on ``device`` first (:func:`a3d_mesh.preflight.preflight`): a broken
    accelerator is replaced (or, strict, stops the run) before any training, not after a stage.
    """
    from a3d_mesh.preflight import preflight, summary

    device = resolve_device(cfg.device)
    progress.message(summary(preflight(device, strict=cfg.strict_backends, log=progress.message)))
    ckpts = out / "checkpoints"
    try:
        guide_c, guide_r = build_guides(cfg, prompts, device, progress, out)
    except ValueError as e:  # unreadable target meshes, wrong counts
        raise RunError(str(e)) from None
    n = len(prompts)
    torch.manual_seed(cfg.seed)
    if cfg.mode == "edit":
        color, background = color_field(cfg, n).to(device), Background().to(device)
    else:
        coarse = CoarseStage(cfg, n, guide_c, device)
        run_stage(coarse, ckpts / "coarse.pt", cfg.checkpoint_every, progress)
        color, background = coarse.field, coarse.background
    torch.manual_seed(cfg.seed + 1)
    refine = RefineStage(cfg, n, guide_r, color, background, device)
    if not (ckpts / "refine.pt").exists():
        if cfg.mode == "edit":
            progress.message("[refine] initialising every object from the input mesh's signed distance")
            refine.initialise_from_mesh(*load_mesh(out / INPUT_FILE))
        else:
            progress.message("[refine] initialising the shared DMTet grid from the coarse NeRF")
            refine.initialise(progress.message)
        atomic_torch_save({"step": 0, "stage": refine.state_dict()}, ckpts / "refine.pt")
    run_stage(refine, ckpts / "refine.pt", cfg.checkpoint_every, progress)
    save_models(out, refine.dmtet, refine.color)  # the trained set, readable without training code


def finish(out: Path, specs: list[HybridSpec], progress: Progress, finetune_steps: int = 0) -> Path:
    """Previews, exports and the manifest of a trained run folder (hybrids fine-tuned first when
    ``finetune_steps`` > 0, on copies of the model: the set's own assets are unaffected)."""
    ts = TrainedSet.load(out)
    hybrids = tuned_hybrid_assets(ts, specs, finetune_steps, progress)
    manifest, assets = finish_run(ts, out, hybrids, log=progress.message)
    progress.message(f"[done] {len(assets)} asset(s); manifest {manifest}")
    return manifest


def run(out: Path, prompts: PromptSet | None = None, cfg: RunConfig | None = None, resume: bool = False,
        progress: Progress | None = None, hybrids: Callable[[PromptSet, RunConfig], list[HybridSpec]] | None = None,
        hybrid_finetune: int = 0) -> Path:
    """Train (or resume) a set, then write previews, exports and the manifest; returns the manifest path.

    ``hybrids`` turns the run's prompts and config into hybrid specs; it is called before any
    training so that a bad spec fails at once. ``hybrid_finetune``: SDS steps to polish each
    hybrid with (:mod:`a3d_mesh.train.finetune`), 0 for none.
    """
    progress = progress or Progress()
    if not resume and cfg is not None and cfg.mode == "edit":  # it needs the input that only edit saves
        raise ConfigError("mode=edit is set by 'a3d-mesh edit INPUT_MESH PROMPTS'; use that command")
    if prompts is not None and cfg is not None and hybrids is not None:
        hybrids(prompts, cfg)  # validate before anything is written
    with run_lock(out, new=not resume):  # one process per run folder, from the first write to the manifest
        prompts, cfg = prepare_run_dir(out, prompts, cfg, resume)
        specs = hybrids(prompts, cfg) if hybrids is not None else []
        progress.message(f"[run] {len(prompts)} object(s): {', '.join(prompts.names)} -> {out}")
        train(prompts, cfg, out, progress)
        return finish(out, specs, progress, hybrid_finetune)


def edit(out: Path, input_mesh: Path | None = None, targets: PromptSet | None = None, cfg: RunConfig | None = None,
         input_prompt: str = "a 3D model", keep_input_frame: bool = False, resume: bool = False,
         progress: Progress | None = None, hybrids: Callable[[PromptSet, RunConfig], list[HybridSpec]] | None = None,
         hybrid_finetune: int = 0) -> Path:
    """Structure-preserving transformation: object 0 is ``input_mesh``, the others ``targets``.

    The normalised input is saved in the run folder, so ``resume`` needs only ``out``. Hybrids
    (``hybrids``, ``hybrid_finetune`` as for :func:`run`) may name the input as ``input`` or 0;
    they are exported in the same frame as the rest (the input's own with ``keep_input_frame``).
    """
    progress = progress or Progress()
    if resume:
        return run(out, resume=True, progress=progress, hybrids=hybrids, hybrid_finetune=hybrid_finetune)
    assert input_mesh is not None and targets is not None and cfg is not None
    if "input" in targets.names:
        raise RunError("the asset name 'input' is taken by the input mesh; rename that prompt")
    inp = prepare_input(input_mesh, cfg.bound)  # fails before anything is written
    if any(v for step in inp.repairs.get("steps", {}).values() for v in step.values()):
        progress.message(f"[edit] warning: the input mesh was repaired ({inp.repairs['input']} -> {inp.repairs['output']})")
    prompts_all = [input_prompt] + targets.prompts
    negatives = negative_prompts(prompts_all, cfg.guidance.negative_prompt, cfg.guidance.negate_other_prompts)
    pset = PromptSet(["input"] + targets.names, prompts_all, negatives)
    cfg = dataclasses.replace(cfg, mode="edit")
    if hybrids is not None:
        hybrids(pset, cfg)  # validate against the edit's names ('input' first) before anything is written
    with run_lock(out, new=True):  # held across the resume below (the lock is re-entrant)
        prepare_run_dir(out, pset, cfg, resume=False)
        save_input(inp, out)
        info = {"input": str(input_mesh), "repairs": inp.repairs, "input_frame": inp.to_input_frame.to_dict(),
                "keep_input_frame": keep_input_frame}
        write_edit_info(out, info)
        return run(out, resume=True, progress=progress, hybrids=hybrids, hybrid_finetune=hybrid_finetune)


def add_hybrids(run_dir: Path, build: Callable[[PromptSet, RunConfig], list[HybridSpec]], finetune_steps: int = 0,
                formats: list[str] | None = None, progress: Progress | None = None) -> Path:
    """``a3d-mesh hybrid``: new hybrids of a trained run (fine-tuned first when ``finetune_steps``),
    added to its previews, exports and manifest under the run's lock; returns the manifest."""
    from a3d_mesh.export.asset import check_tools
    from a3d_mesh.run import add_hybrids as finish_hybrids
    from a3d_mesh.runlock import under_lock

    progress = progress or Progress()

    def go() -> Path:
        ts = TrainedSet.load(run_dir)
        specs = build(ts.prompts, ts.cfg)  # also rejects names that clash with the set's assets
        check_tools(formats or ts.cfg.export.formats)  # a missing Blender / usd-core, before fine-tuning
        hybrids: list[HybridAsset] = tuned_hybrid_assets(ts, specs, finetune_steps, progress)
        return finish_hybrids(ts, run_dir, hybrids, formats=formats, log=progress.message)

    return under_lock(run_dir, go)  # no other process writes the run meanwhile
