"""``manifest.json``: what a run folder holds, for people and tools.

Every asset (name, kind, prompt, code, files, counts, sha256, cleanup, grounding offset; hybrids:
spec, components, fine-tune record), the previews, and the run's other records (an edit's
``edit`` record). Written only by :func:`a3d_mesh.run.finish.finish_run`, after every file it lists
is in place.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Sequence

from a3d_mesh import __version__
from a3d_mesh.atomic import atomic_write_text
from a3d_mesh.prompts import PromptSet
from a3d_mesh.run.folder import EXPORT_DIR, MANIFEST_FILE

# The keys a manifest is rebuilt from; any other key (an edit's record) is carried over on update.
_OWN_KEYS = ("a3d_mesh_version", "created", "prompts", "guidance_model", "assets", "previews")


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    """The run's manifest, or None before its first finish."""
    path = Path(run_dir) / MANIFEST_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def finished_assets(run_dir: Path, names: Sequence[str]) -> list[str] | None:
    """The asset names of a finished run (objects first, then hybrids), or None when ``run_dir``
    has no consistent manifest for the prompts ``names``: one that lists exactly those prompts,
    each of them as an asset, and only files that exist (relative to ``export/``)."""
    try:
        m = read_manifest(run_dir)
        if m is None:
            return None
        prompts = [p["name"] for p in m["prompts"]]
        assets = [a["name"] for a in m["assets"]]
        files = [f for a in m["assets"] for f in dict(a.get("files") or {}).values()]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if tuple(prompts) != tuple(names) or not set(names) <= set(assets):
        return None
    export = Path(run_dir) / EXPORT_DIR
    if not all(isinstance(f, str) and (export / f).exists() for f in files):
        return None
    return assets


def write_manifest(run_dir: Path, prompts: PromptSet, guidance_model: str, assets: list[dict[str, Any]],
                   previews: list[str], keep_existing: bool = False, extra: dict[str, Any] | None = None) -> Path:
    """Write ``RUN_DIR/manifest.json`` atomically.

    With ``keep_existing`` the assets and previews already listed are kept unless replaced by name,
    and so are the old manifest's other records (adding hybrids to a finished run).
    """
    kept: dict[str, Any] = {}
    old = read_manifest(run_dir) if keep_existing else None
    if old is not None:
        kept = {k: v for k, v in old.items() if k not in _OWN_KEYS}  # e.g. an edit run's "edit" record
        names = {a["name"] for a in assets}
        assets = [a for a in old.get("assets", []) if a["name"] not in names] + assets
        previews = sorted(set(p.removeprefix("previews/") for p in old.get("previews", [])) | set(previews))
    manifest = {
        "a3d_mesh_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "prompts": [{"name": n, "prompt": p} for n, p in zip(prompts.names, prompts.prompts)],
        "guidance_model": guidance_model,
        "assets": assets,
        "previews": [f"previews/{p}" for p in previews],
        **kept,
        **(extra or {}),
    }
    return atomic_write_text(Path(run_dir) / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
