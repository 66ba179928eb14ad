"""The 3D viewer a run page uses: Google's ``<model-viewer>`` from the project's local npm install.

The page never loads anything from the network: the viewer script is copied beside the page
(``RUN_DIR/_viewer/``) so the page works served and opened from disk. The UMD build is used
because browsers refuse ES-module scripts from ``file://`` (a module needs a CORS origin) but run
classic scripts; it bundles three.js, so it is the only file needed.

Browsers also refuse ``fetch`` of ``file://`` URLs, which is how the viewer loads a ``.glb``. For
the page opened from disk each GLB therefore also gets a classic-script sidecar
(``_viewer/models/<name>.glb.js``) that hands its bytes, base64, to the page; served pages load the
GLB itself. Sidecars are written only while the GLBs together stay under :data:`SIDECAR_LIMIT`
(they cost 4/3 of the GLB on disk); a larger set is viewed served (``a3d-mesh view``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from a3d_mesh.atomic import atomic_write_bytes, atomic_write_text

ENV_VAR = "A3D_MESH_MODEL_VIEWER"
PACKAGE = Path("@google") / "model-viewer"
SCRIPT_IN_PACKAGE = Path("dist") / "model-viewer-umd.min.js"
VIEWER_DIR = "_viewer"
SCRIPT_NAME = "model-viewer.min.js"
LICENSE_NAME = "LICENSE-model-viewer.txt"
SIDECAR_DIR = "models"
SIDECAR_LIMIT = 64 << 20  # bytes of GLB, summed over the set
# The project folder of a source checkout / editable install (where install.sh runs npm).
PROJECT_DIR = Path(__file__).resolve().parents[2]

HOW_TO = ("3D view unavailable: run `npm install @google/model-viewer` in the project folder{where} "
          "(or re-run install.sh), then `a3d-mesh view RUN_DIR` to refresh this page.")


def how_to() -> str:
    """The page's one line on getting the 3D view, naming the project folder when this is a source
    checkout (where install.sh is); an installed wheel has no such folder to name."""
    where = f" ({PROJECT_DIR})" if (PROJECT_DIR / "install.sh").is_file() else ""
    return HOW_TO.format(where=where)


def candidates() -> list[Path]:
    """Where the viewer script may be, in order: ``$A3D_MESH_MODEL_VIEWER`` (the .js file itself, a
    ``node_modules`` folder or the ``@google/model-viewer`` package folder), then the project's
    ``node_modules`` and those of the working directory and its parents."""
    found: list[Path] = []
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        base = Path(env).expanduser()
        found += [base, base / SCRIPT_IN_PACKAGE, base / PACKAGE / SCRIPT_IN_PACKAGE]
    cwd = Path.cwd().resolve()
    for folder in [PROJECT_DIR, cwd, *cwd.parents]:
        found.append(folder / "node_modules" / PACKAGE / SCRIPT_IN_PACKAGE)
    return found


def find_viewer_script() -> Path | None:
    """The ``<model-viewer>`` UMD script to copy beside pages, or None when it is not installed.
    With ``$A3D_MESH_MODEL_VIEWER`` set, only that place is looked at (so it can also turn the 3D
    view off: point it at a folder without the script)."""
    places = candidates()
    if os.environ.get(ENV_VAR, "").strip():
        places = places[:3]
    for path in places:
        if path.is_file() and path.suffix == ".js":
            return path
    return None


def install_viewer(page_dir: Path, script: Path) -> str:
    """Copy ``script`` (and the package's licence, which its terms ask to keep with it) into
    ``page_dir/_viewer/``; returns the script's href relative to the page. Unchanged files are
    not rewritten, so refreshing a page is cheap."""
    dest_dir = Path(page_dir) / VIEWER_DIR
    _copy_if_changed(script, dest_dir / SCRIPT_NAME)
    licence = script.parent.parent / "LICENSE"  # dist/.. is the package folder
    if licence.is_file():
        _copy_if_changed(licence, dest_dir / LICENSE_NAME)
    return f"{VIEWER_DIR}/{SCRIPT_NAME}"


def _copy_if_changed(src: Path, dest: Path) -> None:
    data = src.read_bytes()
    if dest.is_file() and dest.stat().st_size == len(data) and dest.read_bytes() == data:
        return
    atomic_write_bytes(dest, data)


def sidecar_js(key: str, glb: bytes) -> str:
    """The classic script handing one GLB to the page opened from disk (see the module docstring).
    ``key`` is embedded as a JSON string with '<' escaped, so no name can end the script."""
    return (f"window.a3dModel({safe_json(key)},\"{base64.b64encode(glb).decode('ascii')}\");\n")


def write_sidecars(page_dir: Path, glbs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Write a sidecar per ``(key, glb href)`` while the GLBs together stay under
    :data:`SIDECAR_LIMIT`; returns key -> sidecar href. Sidecars of assets no longer listed, or of
    a set now over the limit, are removed (a stale one would show an old mesh)."""
    page_dir = Path(page_dir)
    side_dir = page_dir / VIEWER_DIR / SIDECAR_DIR
    sizes = {key: (page_dir / href).stat().st_size for key, href in glbs if (page_dir / href).is_file()}
    written: dict[str, str] = {}
    if sum(sizes.values()) <= SIDECAR_LIMIT:
        for index, (key, href) in enumerate(glbs):
            if key not in sizes:
                continue
            rel = f"{VIEWER_DIR}/{SIDECAR_DIR}/{_sidecar_name(index, key)}"
            text = sidecar_js(key, (page_dir / href).read_bytes())
            dest = page_dir / rel
            if not (dest.is_file() and dest.read_text(encoding="utf-8") == text):
                atomic_write_text(dest, text)
            written[key] = rel
    keep = {page_dir / rel for rel in written.values()}
    if side_dir.is_dir():
        for old in side_dir.glob("*.js"):
            if old not in keep:
                old.unlink()
    return written


def _sidecar_name(index: int, key: str) -> str:
    """A file name for the ``index``-th model that is safe and unique whatever the manifest says
    (asset names are already restricted, but a hand-edited manifest is not)."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in key)[:64]
    return f"{index}-{safe}.glb.js"


def remove_viewer(page_dir: Path) -> None:
    """Remove a copied viewer (the page was rewritten without one) so no stale script lingers."""
    shutil.rmtree(Path(page_dir) / VIEWER_DIR, ignore_errors=True)


def safe_json(data: object) -> str:
    """JSON safe inside an HTML ``<script>`` element: '<', '>' and '&' (and the JS line separators)
    are written as \\u escapes, so no string can close the element or open a comment."""
    text = json.dumps(data, ensure_ascii=False, sort_keys=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text
