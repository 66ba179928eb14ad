"""FBX writer through Blender: import the GLB we wrote, export FBX with the texture embedded.

FBX has no open writer worth trusting, so a ``blender`` executable (found on PATH, or given)
does the conversion in a background subprocess (Blender 3.x and 4.x). Blender's glTF importer
turns +Y up into its own +Z up; the FBX exporter turns it back (``axis_up='Y'``,
``axis_forward='-Z'``) and bakes that conversion into the mesh data (``bake_space_transform``),
so every node has identity rotation and unit scale, and ``FBX_SCALE_UNITS`` declares the file in
metres (engines read 1 unit = 1 m).

Blender exits 0 when a ``--python`` script fails unless it is run with ``--python-exit-code``;
its own exception line is what the user sees (:func:`blender_error`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from a3d_mesh.atomic import atomic_path
from .errors import ExportError

# Run first by every Blender script that imports glTF (also docs/blender_still.py).
BLENDER_GLTF_PRELUDE = """
import sys
import bpy
try:
    import numpy
except ImportError:
    raise ImportError("Blender's Python has no numpy, which its glTF importer needs "
                      "(Debian/Ubuntu: apt-get install python3-numpy)") from None

# Blender 3.4's glTF importer uses numpy.bool, which numpy 1.24 removed; Debian's Blender runs on
# the system numpy (python3-numpy 1.24), so restore the alias it meant (the builtin bool).
if not hasattr(numpy, "bool"):
    numpy.bool = bool
"""

BLENDER_SCRIPT = BLENDER_GLTF_PRELUDE + """
src, dst = sys.argv[sys.argv.index("--") + 1:][:2]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_scene.gltf(filepath=src)
if not any(o.type == "MESH" for o in bpy.data.objects):
    raise RuntimeError("the glTF importer produced no mesh")
bpy.ops.export_scene.fbx(
    filepath=dst, use_selection=False, object_types={"MESH"}, axis_forward="-Z", axis_up="Y",
    bake_space_transform=True, apply_unit_scale=True, apply_scale_options="FBX_SCALE_UNITS",
    path_mode="COPY", embed_textures=True, mesh_smooth_type="OFF", add_leaf_bones=False, bake_anim=False,
)
"""

# A Python exception line ("AttributeError: ..."), not the "RuntimeError: Error: Python:
# Traceback" header Blender puts before a failing operator's traceback.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception)\w*: (?!(?:Error: )?Python: Traceback)\S")
# An operator's report ("Error: Cannot read file"), not "Error: script failed, file: ..., exiting."
# that --python-exit-code adds after every script error.
_REPORT_LINE = re.compile(r"^Error: (?!script failed|Python: Traceback)\S")


def blender_error(output: str) -> str:
    """The line of Blender's output that says what went wrong, at most 200 characters.

    The innermost (last) Python exception line when there is one (a failing operator wraps the
    real error in ``RuntimeError: Error: Python: Traceback ...``), else the last operator error
    report, else the last line that is not Blender's closing banner.
    """
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for pattern in (_EXCEPTION_LINE, _REPORT_LINE):
        found = [ln for ln in lines if pattern.match(ln)]
        if found:
            return found[-1][:200]
    rest = [ln for ln in lines if ln != "Blender quit"]
    return rest[-1][:200] if rest else "no output"


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
                cmd = [exe, "--background", "--factory-startup", "--python-exit-code", "1", "--python", str(script),
                       "--", str(src), str(out)]
                try:
                    proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    raise ExportError(f"Blender FBX export timed out after {timeout_s:g} s") from None
                if proc.returncode != 0:
                    output = (proc.stdout + b"\n" + proc.stderr).decode(errors="replace")
                    raise ExportError(f"Blender FBX export failed (exit {proc.returncode}): {blender_error(output)}")
        except OSError as exc:
            raise ExportError(f"Blender FBX export wrote no file: {exc}") from None
    return path
