"""A trained set read back from its run folder, and everything made from it: previews, exports, manifest.

Data flows one way: this module reads ``config.yaml``, ``prompts.txt`` and
``checkpoints/refine.pt`` (never a live trainer), evaluates the shared model at codes, and hands
plain meshes and colour functions to :mod:`a3d_mesh.export`.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from a3d_mesh import __version__
from a3d_mesh.cameras import orbit_cameras
from a3d_mesh.config import ConfigError, RunConfig, load_run_config
from a3d_mesh.export import SetTransform, export_asset, set_transform
from a3d_mesh.export.cleanup import drop_small_components
from a3d_mesh.export.frame import grounded
from a3d_mesh.atomic import atomic_write_text
from a3d_mesh.errors import RunError, TrainingFailed
from a3d_mesh.fields import NeRFField
from a3d_mesh.geometry import DMTetField
from a3d_mesh.hybrid import HybridSpec, code_field
from a3d_mesh.preflight import preflight
from a3d_mesh.prompts import PromptSet, load_prompts, transition_file
from a3d_mesh.render.shading import render_mesh
from a3d_mesh.simplex import corner, sweep
from a3d_mesh.train.coarse import nerf_field
from a3d_mesh.train.loop import Progress, load_checkpoint, restore
from a3d_mesh.train.previews import headlight, labelled_grid, row, save_gif, save_png

Code = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]  # [K] or u(x): points [N,3] -> [N,K]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for, but this torch has no CUDA device (use device=cpu)")
    return torch.device(name)


@dataclass
class TrainedSet:
    """The shared model of a finished (or checkpointed) refine stage."""

    cfg: RunConfig
    prompts: PromptSet
    dmtet: DMTetField
    color: NeRFField
    device: torch.device

    @property
    def n(self) -> int:
        return len(self.prompts)

    def code(self, k: int) -> torch.Tensor:
        return corner(k, self.n, self.device)

    @torch.no_grad()
    def mesh(self, u: Code) -> tuple[torch.Tensor, torch.Tensor]:
        """World-frame mesh (verts [V,3], faces [F,3]) at a code [K] or a code field u(x)."""
        return self.dmtet.extract(u)

    def color_fn(self, u: Code) -> Callable[[torch.Tensor], torch.Tensor]:
        """Albedo at world points [N,3] -> [N,3] for a code or code field."""

        @torch.no_grad()
        def fn(p: torch.Tensor) -> torch.Tensor:
            p = p.to(self.device, torch.float32)
            code = u(p) if callable(u) else u
            return self.color(p, code)[1]

        return fn

    @classmethod
    def load(cls, run_dir: Path, device: str | None = None) -> "TrainedSet":
        run_dir = Path(run_dir)
        ckpt = run_dir / "checkpoints" / "refine.pt"
        for need in (run_dir / "config.yaml", run_dir / "prompts.txt", ckpt):
            if not need.exists():
                raise RunError(f"{run_dir} is not a trained run (missing {need.relative_to(run_dir)})")
        cfg = load_run_config(run_dir / "config.yaml")
        g = cfg.guidance
        prompts = load_prompts(run_dir / "prompts.txt", g.negative_prompt, g.negate_other_prompts)
        dev = resolve_device(device or cfg.device)
        # export / hybrid rasterise too: a broken accelerator is switched off here, not mid-export.
        preflight(dev, strict=cfg.strict_backends)
        return cls._build(cfg, prompts, load_checkpoint(ckpt)["stage"], dev, source=ckpt)

    @classmethod
    def _build(cls, cfg: RunConfig, prompts: PromptSet, state: dict[str, Any], device: torch.device,
               source: Path | None = None) -> "TrainedSet":
        """Fresh fields of the run's architecture holding ``state`` (``{"dmtet": ..., "color": ...}``);
        ``source``: the checkpoint it was read from, named if the state does not fit."""
        n = len(prompts)
        with torch.random.fork_rng(devices=[]):  # the init is overwritten: keep the caller's RNG stream
            torch.manual_seed(0)
            dmtet = DMTetField(n, cfg.refine.tet_resolution, cfg.refine.grid, hidden=cfg.refine.hidden, bound=cfg.bound)
            color = nerf_field(cfg, n)

        def apply() -> None:
            dmtet.load_state_dict(state["dmtet"])
            color.load_state_dict(state["color"])

        if source is None:
            apply()
        else:
            restore(source, apply)
        return cls(cfg, prompts, dmtet.to(device).eval(), color.to(device).eval(), device)

    def copy(self) -> "TrainedSet":
        """An independent copy (new modules, cloned parameters): training it leaves this one as is.
        Rebuilt from state dicts rather than deep-copied, which CUDA-extension modules may refuse."""
        state = {"dmtet": {k: v.detach().clone() for k, v in self.dmtet.state_dict().items()},
                 "color": {k: v.detach().clone() for k, v in self.color.state_dict().items()}}
        return self._build(self.cfg, self.prompts, state, self.device)


def render_views(ts: TrainedSet, u: Code, n_views: int, resolution: int) -> torch.Tensor:
    """Shaded turnaround [n_views,H,W,3] of the mesh at ``u``."""
    cams = orbit_cameras(ts.cfg.camera, n_views, start_azimuth=30.0)
    v, f = ts.mesh(u)
    if f.shape[0] == 0:
        return torch.ones(n_views, resolution, resolution, 3)
    with torch.no_grad():
        out = render_mesh(v, f, cams, resolution, color_fn=ts.color_fn(u), light_dir=headlight(cams), background=1.0)
    return out.rgb.cpu()


@dataclass(frozen=True)
class Extra:
    """An asset beyond the set's objects (a hybrid): name, code (field), manifest info, and the
    model that evaluates it (``None``: the set's own; a fine-tuned copy for ``--hybrid-finetune``)."""

    name: str
    code: Code
    info: dict[str, Any]
    model: "TrainedSet | None" = None


def hybrid_items(ts: TrainedSet, hybrids: Sequence[HybridSpec], finetune_steps: int = 0,
                 progress: Progress | None = None) -> list[Extra]:
    """One :class:`Extra` per hybrid; with ``finetune_steps`` each is first fine-tuned on a copy of
    the model (:mod:`a3d_mesh.train.finetune`; ``ts`` stays untouched) and its info records it."""
    if finetune_steps <= 0:
        return [Extra(h.name, code_field(h, ts.n), {"kind": "hybrid", "hybrid": h.to_dict()}) for h in hybrids]
    from a3d_mesh.train.finetune import finetune_hybrids  # lazy: it imports this module's TrainedSet type

    tuned = finetune_hybrids(ts, hybrids, finetune_steps, progress)
    return [Extra(h.name, code_field(h, ts.n), {"kind": "hybrid", "hybrid": h.to_dict(), "finetune": rec},
                  None if model is ts else model) for h, (model, rec) in zip(hybrids, tuned)]


def write_previews(ts: TrainedSet, out_dir: Path, extras: Sequence[Extra] = (), objects: bool = True) -> list[str]:
    """``<name>.png`` turnarounds of objects and extras (hybrids, each with its own model); with
    ``objects`` also ``set.png`` (the set side by side) and ``transition_<a>_<b>.gif`` sweeps."""
    p = ts.cfg.preview
    files: list[str] = []
    strips, labels = [], []
    items = [(name, ts, ts.code(k), f"{name}: {ts.prompts.prompts[k]}") for k, name in enumerate(ts.prompts.names)] if objects else []
    items += [(e.name, e.model or ts, e.code, f"{e.name} (hybrid{_tuned(e)}): {e.info['hybrid']['spec']}") for e in extras]
    for name, model, u, label in items:
        strip = row(render_views(model, u, p.views, p.resolution))
        strips.append(strip)
        labels.append(label)
        files.append(save_png(out_dir / f"{name}.png", strip).name)
    if not objects:
        return files
    files.append(save_png(out_dir / "set.png", labelled_grid(strips, labels)).name)
    pairs = list(itertools.combinations(range(ts.n), 2))
    for i, j in pairs[: max(ts.n, 3)]:  # all pairs for small sets, a chain's worth for large ones
        frames = [render_views(ts, u.to(ts.device), 1, p.resolution)[0] for u in sweep(i, j, ts.n, p.sweep_frames)]
        name = transition_file(ts.prompts.names[i], ts.prompts.names[j])
        files.append(save_gif(out_dir / name, frames).name)
    return files


def _tuned(e: Extra) -> str:
    steps = e.info.get("finetune", {}).get("steps", 0)
    return f", fine-tuned {steps} steps" if steps else ""


def export_set(ts: TrainedSet, out_dir: Path, formats: list[str] | None = None, texture_size: int | None = None,
               target_faces: int | None = None, extra: Sequence[Extra] = (),
               log: Callable[[str], None] = lambda s: None, only_extra: bool = False,
               transform: SetTransform | None = None) -> list[dict[str, Any]]:
    """Export every object and every :class:`Extra` (hybrids, each evaluated by its own model);
    returns manifest records.

    One transform serves the whole set and is computed from the objects alone, so assets added
    later (``only_extra``: hybrids of a finished run) land in exactly the same frame. With
    ``export.ground: each`` every asset is then shifted along y to stand on y = 0, and its record's
    ``ground_offset_m`` says by how much (:func:`a3d_mesh.export.frame.grounded`; 0 with ``set``).
    A hybrid's record also holds ``components``, its connected pieces as written; a hybrid in
    more than one piece gets a warning line through ``log``.
    An explicit ``transform`` replaces it and is applied as is, never grounded (edits mapped back
    to the input mesh's own frame).
    """
    e = ts.cfg.export
    formats = formats or e.formats
    objects = [Extra(name, ts.code(k), {"kind": "object", "prompt": ts.prompts.prompts[k],
                                        "negative_prompt": ts.prompts.negatives[k], "code": ts.code(k).tolist()})
               for k, name in enumerate(ts.prompts.names)]
    meshes = {x.name: (x.model or ts).mesh(x.code) for x in objects + list(extra)}
    empty = [n for n, (_, f) in meshes.items() if f.shape[0] == 0]
    if empty:
        raise TrainingFailed(f"asset '{empty[0]}' has an empty surface; nothing to export (train longer or check the prompts)")
    ground = transform is None and e.ground == "each"  # an explicit frame is kept exactly
    if transform is None:  # from the set's own objects, never from a fine-tuned copy
        transform = set_transform([meshes[x.name][0].cpu().numpy() for x in objects], height_m=e.height_m)
    records = []
    for x in ([] if only_extra else objects) + list(extra):
        v, f = meshes[x.name]
        log(f"[export] {x.name}: {f.shape[0]} faces -> {', '.join(formats)}")
        asset_tf, offset = _ground(transform, v, f, e.min_component_area) if ground else (transform, 0.0)
        rec = export_asset(x.name, v.cpu(), f.cpu(), (x.model or ts).color_fn(x.code), out_dir, formats=formats,
                           texture_size=texture_size or e.texture_size, target_faces=target_faces or e.target_faces,
                           transform=asset_tf, uv_timeout_s=e.uv_timeout_s,
                           min_component_area=e.min_component_area)
        records.append({**x.info, **rec, "ground_offset_m": offset})
        if x.info.get("kind") == "hybrid":
            records[-1]["components"] = _pieces(x.name, rec, log)
    return records


def _pieces(name: str, rec: dict[str, Any], log: Callable[[str], None]) -> int:
    """Connected components of a hybrid as written (cleanup's count, debris already dropped); more
    than one means the halves do not meet, which the user is told in one line."""
    n = int(rec["cleanup"]["components"]["after"])
    if n > 1:
        log(f"[export] warning: hybrid '{name}' falls apart into {n} pieces; "
            "a wider --blend or --hybrid-finetune STEPS can join them")
    return n


def _ground(transform: SetTransform, verts: torch.Tensor, faces: torch.Tensor,
            min_component_area: float) -> tuple[SetTransform, float]:
    """The asset's grounded transform and offset, judged on the pieces export keeps: cleanup drops
    debris by this same rule, and a blob under the object must not hold it up in the air."""
    v, f = verts.detach().cpu().numpy(), faces.detach().cpu().numpy()
    kept_v, _, _ = drop_small_components(v, f, min_component_area)
    return grounded(transform, kept_v)


_MANIFEST_KEYS = ("a3d_mesh_version", "created", "prompts", "guidance_model", "assets", "previews")


def write_manifest(run_dir: Path, ts: TrainedSet, assets: list[dict[str, Any]], previews: list[str],
                   keep_existing: bool = False, extra: dict[str, Any] | None = None) -> Path:
    """``manifest.json``: every asset (name, prompt, code, files, counts, sha256) and the previews.

    With ``keep_existing`` the assets and previews already listed are kept unless replaced by name,
    and so are the old manifest's other records (adding hybrids to a finished run).
    """
    path = run_dir / "manifest.json"
    kept: dict[str, Any] = {}
    if keep_existing and path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        kept = {k: v for k, v in old.items() if k not in _MANIFEST_KEYS}  # e.g. an edit run's "edit" record
        names = {a["name"] for a in assets}
        assets = [a for a in old.get("assets", []) if a["name"] not in names] + assets
        previews = sorted(set(p.removeprefix("previews/") for p in old.get("previews", [])) | set(previews))
    manifest = {
        "a3d_mesh_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "prompts": [{"name": n, "prompt": p} for n, p in zip(ts.prompts.names, ts.prompts.prompts)],
        "guidance_model": ts.cfg.guidance.model if ts.cfg.guidance.kind == "sds" else "images",
        "assets": assets,
        "previews": [f"previews/{p}" for p in previews],
        **kept,
        **(extra or {}),
    }
    return atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")


STAGING_PREFIX = ".a3d-staging-"


def finish_run(ts: TrainedSet, run_dir: Path, extras: Sequence[Extra] = (), *, formats: Sequence[str] | None = None,
               texture_size: int | None = None, target_faces: int | None = None, out: Path | None = None,
               objects: bool = True, previews: bool = True, keep_existing: bool = False,
               log: Callable[[str], None] = lambda s: None) -> tuple[Path, list[dict[str, Any]]]:
    """The one way a run's previews, exports and manifest are (re)written: ``run``/``edit`` finishing,
    ``export`` and ``hybrid`` all come here. Returns (manifest path, new asset records).

    Everything is first written to a staging folder inside the destination (same file system), and
    only when all of it is there are the files moved into place and the manifest written, so a
    failure leaves the folder as it was. The run's own frame is kept (an edit run's
    ``--keep-input-frame`` transform) and its ``edit`` record is written to the manifest.

    Args:
        objects: export the set's objects (and, with ``previews``, ``set.png`` and transitions);
            False adds only ``extras`` (hybrids of a finished run).
        out: another folder for the files and a manifest listing only them (no previews).
        keep_existing: keep the manifest's other assets (earlier hybrids), previews and records.

    Raises:
        ExportError: a bad format or missing tool (before anything is written), or, after the
            manifest is written, one line naming the formats whose writer failed.
    """
    import shutil
    import tempfile

    from a3d_mesh.edit import export_transform, read_edit_info  # lazy: edit imports training modules
    from a3d_mesh.export.asset import check_tools, failures
    from a3d_mesh.export.errors import ExportError

    fmts = check_tools(formats or ts.cfg.export.formats)
    edit_info = read_edit_info(run_dir)
    dest = Path(out) if out is not None else Path(run_dir)
    export_dir = dest if out is not None else dest / "export"
    if out is None:  # we hold the run's lock: staging folders left by a killed process are stale
        for old in Path(run_dir).glob(STAGING_PREFIX + "*"):
            shutil.rmtree(old, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=dest))
    try:
        shown = write_previews(ts, stage / "previews", extras, objects=objects) if previews and out is None else []
        if shown:
            log(f"[previews] {len(shown)} files in {dest / 'previews'}")
        records = export_set(ts, stage / "export", fmts, texture_size, target_faces, extra=extras, log=log,
                             only_extra=not objects, transform=export_transform(edit_info))
        _move_tree(stage / "previews", dest / "previews")
        _move_tree(stage / "export", export_dir)
        manifest = write_manifest(dest, ts, records, shown, keep_existing=keep_existing and out is None,
                                  extra={"edit": edit_info} if edit_info else None)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    failed = failures(records)
    if failed:
        raise ExportError(failed)
    return manifest, records


def _move_tree(src: Path, dst: Path) -> None:
    """Move every file under ``src`` to the same relative path under ``dst`` (``os.replace``: each
    file is swapped in whole; the staging folder is on the same file system)."""
    import os

    if not src.exists():
        return
    for p in sorted(src.rglob("*")):
        if p.is_file():
            target = dst / p.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, target)
