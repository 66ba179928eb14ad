"""Finishing a run: previews, exports and the manifest, written together or not at all.

:func:`finish_run` is the one way a run's files are (re)written: ``run`` and ``edit`` finishing,
``export`` and ``hybrid`` all come here (the CLI commands are thin), so they cannot drift apart.
It reads only the trained set (:class:`a3d_mesh.run.TrainedSet`) and the run folder's records;
nothing here imports training code.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from a3d_mesh.cameras import orbit_cameras
from a3d_mesh.config import RunConfig
from a3d_mesh.errors import A3DMeshError, TrainingFailed, first_line
from a3d_mesh.export import ExportError, SetTransform, export_asset, set_transform
from a3d_mesh.export.asset import check_tools, failures
from a3d_mesh.export.cleanup import drop_small_components
from a3d_mesh.export.frame import grounded
from a3d_mesh.hybrid import HybridSpec, code_field
from a3d_mesh.images import headlight, labelled_grid, row, save_gif, save_png
from a3d_mesh.prompts import transition_file
from a3d_mesh.render.shading import render_mesh
from a3d_mesh.run.folder import EXPORT_DIR, PREVIEWS_DIR, export_transform, read_edit_info
from a3d_mesh.run.manifest import write_manifest
from a3d_mesh.run.trained import TrainedSet
from a3d_mesh.simplex import Code, sweep


def guidance_model(cfg: RunConfig) -> str:
    """What guided the run, as the manifest names it: the prior's id, or ``images`` (known targets)."""
    return cfg.guidance.model if cfg.guidance.kind == "sds" else "images"


def render_views(ts: TrainedSet, u: Code, n_views: int, resolution: int) -> torch.Tensor:
    """Shaded turnaround [n_views,H,W,3] of the mesh at ``u``, as it is exported: without the
    debris that cleanup drops (``export.min_component_area``), so a preview shows the file's pieces."""
    cams = orbit_cameras(ts.cfg.camera, n_views, start_azimuth=30.0)
    v, f = kept_pieces(*ts.mesh(u), ts.cfg.export.min_component_area)
    if f.shape[0] == 0:
        return torch.ones(n_views, resolution, resolution, 3)
    with torch.no_grad():
        out = render_mesh(v, f, cams, resolution, color_fn=ts.color_fn(u), light_dir=headlight(cams), background=1.0)
    return out.rgb.cpu()


@dataclass(frozen=True)
class HybridAsset:
    """An asset beyond the set's objects (a hybrid): name, code field, manifest info, and the
    model that evaluates it (``None``: the set's own; a fine-tuned copy for ``--hybrid-finetune``).
    The set's own objects are exported through the same record (code: their corner)."""

    name: str
    code: Code
    info: dict[str, Any]
    model: "TrainedSet | None" = None


def hybrid_assets(ts: TrainedSet, hybrids: Sequence[HybridSpec]) -> list[HybridAsset]:
    """One :class:`HybridAsset` per hybrid, evaluated by the set's own model (no fine-tune; that is
    training's, :func:`a3d_mesh.train.finetune.tuned_hybrid_assets`)."""
    return [HybridAsset(h.name, code_field(h, ts.n), {"kind": "hybrid", "hybrid": h.to_dict()}) for h in hybrids]


def write_previews(ts: TrainedSet, out_dir: Path, extras: Sequence[HybridAsset] = (), objects: bool = True) -> list[str]:
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


def _tuned(e: HybridAsset) -> str:
    steps = e.info.get("finetune", {}).get("steps", 0)
    return f", fine-tuned {steps} steps" if steps else ""


def export_set(ts: TrainedSet, out_dir: Path, formats: list[str] | None = None, texture_size: int | None = None,
               target_faces: int | None = None, extra: Sequence[HybridAsset] = (),
               log: Callable[[str], None] = lambda s: None, only_extra: bool = False,
               transform: SetTransform | None = None, normal_map: bool | None = None) -> list[dict[str, Any]]:
    """Export every object and every :class:`HybridAsset` (hybrids, each evaluated by its own model);
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
    objects = [HybridAsset(name, ts.code(k), {"kind": "object", "prompt": ts.prompts.prompts[k],
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
                           normal_map=e.normal_map if normal_map is None else normal_map,
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


def kept_pieces(verts: torch.Tensor, faces: torch.Tensor, min_component_area: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The mesh (verts [V,3], faces [F,3]) without the pieces export's cleanup drops as debris
    (by the same rule), on the same device and dtypes."""
    if faces.shape[0] == 0:
        return verts, faces
    v, f, _ = drop_small_components(verts.detach().cpu().numpy(), faces.detach().cpu().numpy(), min_component_area)
    return (torch.from_numpy(v).to(verts.device, verts.dtype), torch.from_numpy(f).to(faces.device, faces.dtype))


def _ground(transform: SetTransform, verts: torch.Tensor, faces: torch.Tensor,
            min_component_area: float) -> tuple[SetTransform, float]:
    """The asset's grounded transform and offset, judged on the pieces export keeps: cleanup drops
    debris by this same rule, and a blob under the object must not hold it up in the air."""
    kept_v, _, _ = drop_small_components(verts.detach().cpu().numpy(), faces.detach().cpu().numpy(), min_component_area)
    return grounded(transform, kept_v)


STAGING_PREFIX = ".a3d-staging-"


def finish_run(ts: TrainedSet, run_dir: Path, extras: Sequence[HybridAsset] = (), *, formats: Sequence[str] | None = None,
               texture_size: int | None = None, target_faces: int | None = None, out: Path | None = None,
               objects: bool = True, previews: bool = True, keep_existing: bool = False,
               normal_map: bool | None = None,
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
    fmts = check_tools(formats or ts.cfg.export.formats)
    edit_info = read_edit_info(run_dir)
    dest = Path(out) if out is not None else Path(run_dir)
    export_dir = dest if out is not None else dest / EXPORT_DIR
    if out is None:  # we hold the run's lock: staging folders left by a killed process are stale
        for old in Path(run_dir).glob(STAGING_PREFIX + "*"):
            shutil.rmtree(old, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=dest))
    try:
        shown = write_previews(ts, stage / PREVIEWS_DIR, extras, objects=objects) if previews and out is None else []
        if shown:
            log(f"[previews] {len(shown)} files in {dest / PREVIEWS_DIR}")
        records = export_set(ts, stage / EXPORT_DIR, fmts, texture_size, target_faces, extra=extras, log=log,
                             only_extra=not objects, transform=export_transform(edit_info), normal_map=normal_map)
        _move_tree(stage / PREVIEWS_DIR, dest / PREVIEWS_DIR)
        _move_tree(stage / EXPORT_DIR, export_dir)
        manifest = write_manifest(dest, ts.prompts, guidance_model(ts.cfg), records, shown,
                                  keep_existing=keep_existing and out is None,
                                  extra={"edit": edit_info} if edit_info else None)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    write_run_page(dest, log)
    failed = failures(records)
    if failed:
        raise ExportError(failed)
    return manifest, records


def write_run_page(folder: Path, log: Callable[[str], None]) -> None:
    """``folder/index.html``, the page that shows the set (:mod:`a3d_mesh.gallery`), refreshed from
    the manifest just written. The files and manifest are the results; a page that cannot be
    written is one warning line, not a failed run."""
    from a3d_mesh.gallery import write_index

    try:
        log(f"[page] {write_index(folder)} (a3d-mesh view {folder} serves it)")
    except (A3DMeshError, OSError) as e:
        log(f"[page] warning: no index.html: {first_line(e)}")


def _move_tree(src: Path, dst: Path) -> None:
    """Move every file under ``src`` to the same relative path under ``dst`` (``os.replace``: each
    file is swapped in whole; the staging folder is on the same file system)."""
    if not src.exists():
        return
    for p in sorted(src.rglob("*")):
        if p.is_file():
            target = dst / p.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, target)


def export_run(run_dir: Path, formats: Sequence[str] | None = None, texture_size: int | None = None,
               target_faces: int | None = None, out: Path | None = None, normal_map: bool | None = None,
               log: Callable[[str], None] = lambda s: None) -> Path:
    """``a3d-mesh export``: re-export every asset of a trained run (its frame, edit record, earlier
    hybrids and previews kept), under the run's lock; returns the manifest written."""
    from a3d_mesh.runlock import under_lock

    def go() -> Path:
        ts = TrainedSet.load(run_dir)
        return finish_run(ts, run_dir, formats=formats, texture_size=texture_size, target_faces=target_faces,
                          out=out, previews=False, keep_existing=True, normal_map=normal_map, log=log)[0]

    return under_lock(run_dir, go)  # no other process writes the run meanwhile


def add_hybrids(ts: TrainedSet, run_dir: Path, hybrids: Sequence[HybridAsset], formats: Sequence[str] | None = None,
                log: Callable[[str], None] = lambda s: None) -> Path:
    """Add hybrids to a finished run: their previews, files and manifest records, the set's own
    assets and earlier hybrids kept. The caller holds the run's lock."""
    return finish_run(ts, run_dir, hybrids, formats=formats, objects=False, keep_existing=True, log=log)[0]
