"""One run, end to end: prompts -> guidance; coarse NeRF -> DMTet refine -> previews -> export -> manifest.

Run folder layout::

    RUN_DIR/config.yaml        the resolved configuration (what --resume uses)
    RUN_DIR/prompts.txt        the prompt set as parsed (name: prompt)
    RUN_DIR/checkpoints/       coarse.pt, refine.pt (atomic; resumable)
    RUN_DIR/previews/          PNG turnarounds, set.png, transition GIFs
    RUN_DIR/export/            one file (or folder) per asset and format
    RUN_DIR/manifest.json      every asset with its code, files, counts and sha256
    RUN_DIR/.a3d-mesh.lock     held by the one process working on the folder (a3d_mesh.runlock)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import torch

from a3d_mesh.assets import RunError, TrainedSet, finish_run, hybrid_items, resolve_device
from a3d_mesh.config import RunConfig, dump_config, load_run_config
from a3d_mesh.atomic import atomic_write_text
from a3d_mesh.edit import EDIT_FILE, INPUT_FILE, PinnedGuide, load_input_colors, prepare_input, save_input
from a3d_mesh.guidance import KNOWN_PRIORS, SDSGuidance, encode_prompts, load_components, truncation_warnings
from a3d_mesh.hybrid import HybridSpec
from a3d_mesh.prompts import PromptSet, load_prompts, negative_prompts
from a3d_mesh.render.shading import Background
from a3d_mesh.runlock import run_lock
from a3d_mesh.train.coarse import CoarseStage, nerf_field
from a3d_mesh.train.guide import Guide, ImageTargetGuide, SDSGuide, load_mesh
from a3d_mesh.train.loop import Progress, atomic_torch_save, run_stage
from a3d_mesh.train.refine import RefineStage


def build_guides(cfg: RunConfig, prompts: PromptSet, device: torch.device, progress: Progress,
                 run_dir: Path) -> tuple[Guide, Guide]:
    """The coarse and refine stages' guides (they share one model and one embedding cache).

    Edit runs (``guidance.pin_input``) wrap the refine guide so that e_0 reconstructs the input.
    """
    g = cfg.guidance
    weights = dict(mask_weight=g.target_weight_mask, normal_weight=g.target_weight_normal,
                   depth_weight=g.target_weight_depth)
    pinned = load_mesh(run_dir / g.pin_input) if g.pin_input else None
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
        progress.message(f"[guidance] loading {g.model} on {device}")
        comps = load_components(g.model, device)
        if g.model in KNOWN_PRIORS:  # say which mirror or cache the name resolved to
            progress.message(f"[guidance] {g.model} loaded from {comps.source}")
        # SDS off the model's training size still runs, but guides poorly: say so once.
        for note in dict.fromkeys(comps.resolution_note(s.resolution) for s in (cfg.coarse.sds, cfg.refine.sds)):
            if note:
                progress.message(note)
        # A cut prompt loses its last words (and view word) without a sound otherwise (issue 28).
        for line in truncation_warnings(comps.tokenizer, prompts.names, prompts.prompts, prompts.negatives,
                                        g.view_prompts):
            progress.message(line)
        emb = encode_prompts(comps, prompts.prompts, prompts.negatives, g.view_prompts)
        guide_c = SDSGuide(SDSGuidance(comps, emb, cfg.coarse.sds, seed=cfg.seed))
        guide_r = SDSGuide(SDSGuidance(comps, emb, cfg.refine.sds, seed=cfg.seed + 1))
    if pinned is not None:  # in the input's own colours when it has them, else a flat one
        colors = load_input_colors(run_dir)
        guide_r = PinnedGuide(ImageTargetGuide([pinned], **weights, colors=None if colors is None else [colors]), guide_r)
    return guide_c, guide_r


def prepare_run_dir(out: Path, prompts: PromptSet | None, cfg: RunConfig | None, resume: bool) -> tuple[PromptSet, RunConfig]:
    """Create a new run folder, or read an existing one back for ``--resume``."""
    ckpts = out / "checkpoints"
    if resume:
        if not (out / "config.yaml").exists():
            raise RunError(f"nothing to resume in {out} (no config.yaml); start it without --resume")
        saved_cfg = load_run_config(out / "config.yaml")
        saved = load_prompts(out / "prompts.txt", saved_cfg.guidance.negative_prompt,
                             saved_cfg.guidance.negate_other_prompts)
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
    if cfg.guidance.pin_input:
        color, background = nerf_field(cfg, n).to(device), Background().to(device)
    else:
        coarse = CoarseStage(cfg, n, guide_c, device)
        run_stage(coarse, ckpts / "coarse.pt", cfg.checkpoint_every, progress)
        color, background = coarse.field, coarse.background
    torch.manual_seed(cfg.seed + 1)
    refine = RefineStage(cfg, n, guide_r, color, background, device)
    if not (ckpts / "refine.pt").exists():
        if cfg.guidance.pin_input:
            progress.message("[refine] initialising every object from the input mesh's signed distance")
            refine.initialise_from_mesh(*load_mesh(out / cfg.guidance.pin_input))
        else:
            progress.message("[refine] initialising the shared DMTet grid from the coarse NeRF")
            refine.initialise(progress.message)
        atomic_torch_save({"step": 0, "stage": refine.state_dict()}, ckpts / "refine.pt")
    run_stage(refine, ckpts / "refine.pt", cfg.checkpoint_every, progress)


def finish(out: Path, specs: list[HybridSpec], progress: Progress, finetune_steps: int = 0) -> Path:
    """Previews, exports and the manifest of a trained run folder (hybrids fine-tuned first when
    ``finetune_steps`` > 0, on copies of the model: the set's own assets are unaffected)."""
    ts = TrainedSet.load(out)
    extras = hybrid_items(ts, specs, finetune_steps, progress)
    manifest, assets = finish_run(ts, out, extras, log=progress.message)
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
    cfg = dataclasses.replace(cfg, guidance=dataclasses.replace(cfg.guidance, pin_input=INPUT_FILE))
    if hybrids is not None:
        hybrids(pset, cfg)  # validate against the edit's names ('input' first) before anything is written
    with run_lock(out, new=True):  # held across the resume below (the lock is re-entrant)
        prepare_run_dir(out, pset, cfg, resume=False)
        save_input(inp, out)
        info = {"input": str(input_mesh), "repairs": inp.repairs, "input_frame": inp.to_input_frame.to_dict(),
                "keep_input_frame": keep_input_frame}
        atomic_write_text(out / EDIT_FILE, json.dumps(info, indent=2) + "\n")
        return run(out, resume=True, progress=progress, hybrids=hybrids, hybrid_finetune=hybrid_finetune)
