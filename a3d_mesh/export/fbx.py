"""FBX writer through Blender: import the GLB we wrote, export FBX with the texture embedded.

FBX has no open writer worth trusting, so a ``blender`` executable (found on PATH, or given)
does the conversion in a background subprocess. Blender's glTF importer turns +Y up into its
own +Z up; the FBX exporter is told ``axis_up='Y', axis_forward='-Z'`` to turn it back, and
``FBX_SCALE_UNITS`` so that engines read 1 unit = 1 metre with a unit object scale.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from a3d_mesh.atomic import atomic_path
from .errors import ExportError

BLENDER_SCRIPT = """
import sys
import bpy

src, dst = sys.argv[sys.argv.index("--") + 1:][:2]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_scene.gltf(filepath=src)
bpy.ops.export_scene.fbx(
    filepath=dst, use_selection=False, object_types={"MESH"}, axis_forward="-Z", axis_up="Y",
    apply_unit_scale=True, apply_scale_options="FBX_SCALE_UNITS", path_mode="COPY",
    embed_textures=True, mesh_smooth_type="OFF", add_leaf_bones=False, bake_anim=False,
)
"""


def find_blender(blender: str | None = None) -> str:
    """Resolve the Blender executable (``blender`` argument, else ``blender`` on PATH).

    Raises:
        ExportError: no Blender found (the message says how to fix it).
    """
    exe = shutil.which(blender or "blender")
    if exe is None:
        raise ExportError(
            "FBX export needs Blender: install it and put `blender` on PATH (or drop fbx from --format)"
        )
    return exe


def write_fbx(path: str | Path, glb_bytes: bytes, blender: str | None = None, timeout_s: float = 600.0) -> Path:
    """Convert an in-memory GLB to FBX at ``path`` with Blender in background mode; atomic.

    Args:
        path: destination ``.fbx``.
        glb_bytes: the asset as built by :func:`a3d_mesh.export.gltf.build_glb`.
        blender: executable name or path; default ``blender`` on PATH.
        timeout_s: wall-clock limit of the Blender run.

    Raises:
        ExportError: Blender missing, failed, timed out or wrote nothing.
    """
    exe = find_blender(blender)
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="a3d-fbx-") as tmp:
        src, script = Path(tmp) / "in.glb", Path(tmp) / "to_fbx.py"
        src.write_bytes(glb_bytes)
        script.write_text(BLENDER_SCRIPT)
        try:
            with atomic_path(path) as out:
                cmd = [exe, "--background", "--factory-startup", "--python", str(script), "--", str(src), str(out)]
                try:
                    proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    raise ExportError(f"Blender FBX export timed out after {timeout_s:g} s") from None
                if proc.returncode != 0:
                    last = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()[-1:] or [""]
                    raise ExportError(f"Blender FBX export failed (exit {proc.returncode}): {last[0][:200]}")
        except OSError as exc:
            raise ExportError(f"Blender FBX export wrote no file: {exc}") from None
    return path
