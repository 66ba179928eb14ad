"""What a run page shows, read from a run folder's ``manifest.json`` and the files beside it.

The manifest is the only source of truth about the set (assets, prompts, codes, counts, previews);
the folder is only looked at to tell which listed files really exist and how large they are, and
to read each GLB's bounding box (the POSITION accessors' ``min``/``max``, which glTF requires), so
every viewer can share one camera framing and relative sizes stay true.

Exported files are listed relative to the export folder: ``RUN_DIR/export`` for a run, or the
folder itself for ``a3d-mesh export --out DIR`` (whose manifest sits beside the files).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from a3d_mesh.errors import A3DMeshError
from a3d_mesh.run.folder import CONFIG_FILE, EDIT_FILE, EXPORT_DIR, MANIFEST_FILE as MANIFEST, PREVIEWS_DIR, PROMPTS_FILE

# Files of the run folder worth a link besides the exports (when present).
RUN_FILES = (MANIFEST, CONFIG_FILE, PROMPTS_FILE, EDIT_FILE)


class GalleryError(A3DMeshError):
    """A folder that has no page to show: not a run folder, not a batch of them, or a damaged manifest."""


@dataclass(frozen=True)
class FileLink:
    """One file the page links to: ``href`` relative to the page, whether it exists, its size."""

    label: str
    href: str
    exists: bool
    size: int = 0


@dataclass
class AssetView:
    """One asset of the set (an object or a hybrid) as the page shows it."""

    name: str
    kind: str
    prompt: str | None
    code: list[float] | None
    hybrid_spec: str | None
    hybrid_parts: list[str]
    finetune_steps: int
    n_faces: int | None
    n_vertices: int | None
    components: int | None
    ground_offset_m: float | None
    glb: FileLink | None
    turnaround: FileLink | None
    files: list[FileLink]
    failed: dict[str, str]
    bbox: tuple[list[float], list[float]] | None = None


@dataclass
class RunView:
    """A whole run folder as the page shows it."""

    run_dir: Path
    title: str
    created: str
    version: str
    guidance_model: str
    assets: list[AssetView]
    set_image: FileLink | None
    transitions: list[tuple[str, FileLink]]
    other_previews: list[FileLink]
    run_files: list[FileLink]
    edit: dict[str, Any] | None = None

    @property
    def hybrids(self) -> list[AssetView]:
        return [a for a in self.assets if a.kind == "hybrid"]


def read_checked_manifest(run_dir: Path) -> dict[str, Any]:
    """The parsed ``manifest.json`` of ``run_dir``; a missing or damaged one is a :class:`GalleryError`
    (a page must say why it cannot be shown, where the run package just reads)."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise GalleryError(f"no {MANIFEST} in {run_dir}: not a finished run folder (nor a folder of them)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GalleryError(f"{path} is not valid JSON ({e}); re-export the run to rewrite it") from e
    if not isinstance(data, dict) or not isinstance(data.get("assets", []), list):
        raise GalleryError(f"{path} is not an a3d-mesh manifest (no list of assets)")
    return data


def link(root: Path, rel: str, label: str | None = None) -> FileLink:
    """A link to ``root/rel`` (``rel`` uses '/'), with existence and size looked up. A path that
    leaves ``root`` (absolute, or with '..') counts as missing: a hand-edited manifest must not make
    the page read, embed or vouch for files elsewhere."""
    path = root / rel
    parts = Path(rel).parts
    exists = not Path(rel).is_absolute() and ".." not in parts and path.is_file()
    return FileLink(label or rel, rel, exists, path.stat().st_size if exists else 0)


def export_prefix(run_dir: Path, manifest: dict[str, Any]) -> str:
    """Where the manifest's export paths are relative to: ``export/`` in a run folder, ``''`` in an
    ``export --out`` folder (decided by where the first listed file actually is)."""
    for rec in manifest.get("assets", []):
        for rel in _asset_paths(rec):
            if (run_dir / EXPORT_DIR / rel).is_file():
                return f"{EXPORT_DIR}/"
            if (run_dir / rel).is_file():
                return ""
    return f"{EXPORT_DIR}/" if (run_dir / EXPORT_DIR).is_dir() or not manifest.get("assets") else ""


def _asset_paths(rec: dict[str, Any]) -> list[str]:
    """Every exported file of an asset record: its formats' files first, then the other hashed ones
    (an OBJ's .mtl and texture PNGs), each once."""
    paths: list[str] = []
    for rel in list(_dict(rec.get("files")).values()) + list(_dict(rec.get("sha256")).keys()):
        if isinstance(rel, str) and rel not in paths:
            paths.append(rel)
    return paths


def _dict(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else empty (a hand-edited manifest may hold anything)."""
    return value if isinstance(value, dict) else {}


def _float(value: Any) -> float | None:
    """A JSON number as a float (None for anything else, bools included)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    number = _float(value)
    return int(number) if number is not None else None


def _components(rec: dict[str, Any]) -> int | None:
    """Connected pieces as written: a hybrid records them, an object's cleanup report has them."""
    if _int(rec.get("components")) is not None:
        return _int(rec.get("components"))
    return _int(_dict(_dict(rec.get("cleanup")).get("components")).get("after"))


def glb_bbox(path: Path) -> tuple[list[float], list[float]] | None:
    """The axis-aligned box of a GLB's vertex positions from its JSON chunk (no mesh decoding), or
    None when the file is not a GLB with POSITION bounds. Node transforms are not applied: the
    exporter writes vertices in the set's frame, with none."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
            if len(head) < 20 or head[:4] != b"glTF":
                return None
            length, kind = struct.unpack("<I4s", head[12:20])
            if kind != b"JSON" or length > 64 << 20:
                return None
            doc = json.loads(fh.read(length))
        lo, hi = [float("inf")] * 3, [float("-inf")] * 3
        for mesh in doc.get("meshes", []):
            for prim in mesh.get("primitives", []):
                acc = doc["accessors"][prim["attributes"]["POSITION"]]
                for k in range(3):
                    lo[k], hi[k] = min(lo[k], float(acc["min"][k])), max(hi[k], float(acc["max"][k]))
    except (OSError, ValueError, KeyError, IndexError, TypeError, struct.error):
        return None
    return (lo, hi) if lo[0] <= hi[0] else None


def _asset(run_dir: Path, prefix: str, rec: dict[str, Any]) -> AssetView:
    name = str(rec.get("name", "?"))
    files = [link(run_dir, prefix + rel, rel) for rel in _asset_paths(rec)]
    glb_rel = _dict(rec.get("files")).get("glb")
    glb = link(run_dir, prefix + glb_rel, glb_rel) if isinstance(glb_rel, str) else None
    hybrid = _dict(rec.get("hybrid"))
    parts = [f"{p.get('name', p.get('source'))} @ {p.get('region', 'rest')}" for p in hybrid.get("parts", [])
             if isinstance(p, dict)]
    code = rec.get("code")
    finetune = _dict(rec.get("finetune"))
    turn = link(run_dir, f"{PREVIEWS_DIR}/{name}.png", f"{name}.png")
    return AssetView(
        name=name,
        kind=str(rec.get("kind", "object")),
        prompt=rec.get("prompt") if isinstance(rec.get("prompt"), str) else None,
        code=[float(c) for c in code] if isinstance(code, list) and all(_float(c) is not None for c in code) else None,
        hybrid_spec=str(hybrid["spec"]) if "spec" in hybrid else None,
        hybrid_parts=parts,
        finetune_steps=_int(finetune.get("steps")) or 0,
        n_faces=_int(rec.get("n_faces")),
        n_vertices=_int(rec.get("n_vertices")),
        components=_components(rec),
        ground_offset_m=_float(rec.get("ground_offset_m")),
        glb=glb,
        turnaround=turn if turn.exists else None,
        files=files,
        failed={str(k): str(v) for k, v in _dict(rec.get("failed")).items()},
        bbox=glb_bbox(run_dir / glb.href) if glb is not None and glb.exists else None,
    )


def read_run_view(run_dir: Path) -> RunView:
    """Everything a run page shows, from ``run_dir/manifest.json`` (see the module docstring)."""
    run_dir = Path(run_dir)
    manifest = read_checked_manifest(run_dir)
    prefix = export_prefix(run_dir, manifest)
    previews = [p for p in manifest.get("previews", []) if isinstance(p, str)]
    assets = [_asset(run_dir, prefix, rec) for rec in manifest.get("assets", []) if isinstance(rec, dict)]
    shown = {f"{PREVIEWS_DIR}/{a.name}.png" for a in assets}
    transitions, others, set_image = [], [], None
    names = sorted((a.name for a in assets), key=len, reverse=True)  # longest first: names may share prefixes
    for rel in previews:
        base = rel.rsplit("/", 1)[-1]
        if base == "set.png":
            set_image = link(run_dir, rel, base)
        elif base.startswith("transition_") and base.endswith(".gif"):
            transitions.append((_transition_label(base, names), link(run_dir, rel, base)))
        elif rel not in shown:
            others.append(link(run_dir, rel, base))
    created = manifest.get("created", "")
    return RunView(
        run_dir=run_dir,
        title=run_dir.resolve().name,
        created=str(created),
        version=str(manifest.get("a3d_mesh_version", "")),
        guidance_model=str(manifest.get("guidance_model", "")),
        assets=assets,
        set_image=set_image,
        transitions=transitions,
        other_previews=others,
        run_files=[link(run_dir, f) for f in RUN_FILES if (run_dir / f).is_file()],
        edit=manifest.get("edit") if isinstance(manifest.get("edit"), dict) else None,
    )


def _transition_label(base: str, names: list[str]) -> str:
    """'transition_dog_cat.gif' -> 'dog → cat' (names may contain '_', so known names are matched)."""
    stem = base[len("transition_"):-len(".gif")]
    for a in names:
        if stem.startswith(a + "_") and stem[len(a) + 1:] in names:
            return f"{a} \u2192 {stem[len(a) + 1:]}"
    return stem.replace("_", " ")


def has_manifest(folder: Path) -> bool:
    """Whether ``folder`` holds a run's ``manifest.json``."""
    return (Path(folder) / MANIFEST).is_file()


def run_subfolders(folder: Path) -> list[Path]:
    """The run folders directly inside ``folder`` (a batch), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and has_manifest(p))
