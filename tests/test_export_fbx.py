"""FBX through a real Blender: nodes with identity rotation and unit scale in metres, Blender's own
error in one line. The Blender tests are skipped only when no ``blender`` is on PATH (Debian:
``apt-get install blender python3-numpy``), and never under ``CI=true`` (.ci/run installs it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import trimesh

from a3d_mesh.export import ExportError, build_glb, texture_png_bytes, unwrap, vertex_normals, write_fbx
from a3d_mesh.export.fbx import blender_error

# Skipped where no Blender is installed, except under CI=true: .ci/run installs Debian's, so FBX
# is never left untested there.
needs_blender = pytest.mark.skipif(shutil.which("blender") is None and os.environ.get("CI", "").lower() != "true",
                                   reason="`blender` is not on PATH (FBX export needs it)")

# Re-import an FBX in Blender as an engine would (the file's axes baked into the mesh, so node
# transforms are read as written) and print each mesh object's transform and world bounds.
INSPECT = """
import sys, json, bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_scene.fbx(filepath=sys.argv[sys.argv.index("--") + 1], bake_space_transform=True)
for o in bpy.data.objects:
    if o.type == "MESH":
        pts = [o.matrix_world @ v.co for v in o.data.vertices]
        print("A3D-OBJ " + json.dumps({"rotation": list(o.rotation_euler), "scale": list(o.scale),
              "lo": [min(p[i] for p in pts) for i in range(3)], "hi": [max(p[i] for p in pts) for i in range(3)]}))
"""

# What Debian's Blender 3.4.1 with numpy 1.24 printed for the old script (trimmed): it exited 0.
NUMPY_BOOL_OUTPUT = """Blender 3.4.1
Data are loaded, start creating Blender stuff
Traceback (most recent call last):
  File "/usr/share/blender/scripts/addons/io_scene_gltf2/blender/imp/gltf2_blender_mesh.py", line 612, in do_primitives
    poly_smooths = np.empty(num_polys, dtype=np.bool)
  File "/usr/lib/python3/dist-packages/numpy/__init__.py", line 305, in __getattr__
    raise AttributeError(__former_attrs__[attr])
AttributeError: module 'numpy' has no attribute 'bool'.
`np.bool` was a deprecated alias for the builtin `bool`. To avoid this error in existing code, use `bool` by itself.
Error: Python: Traceback (most recent call last):
  File "/tmp/a3d-fbx-x/to_fbx.py", line 8, in <module>
RuntimeError: Error: Python: Traceback (most recent call last):
AttributeError: module 'numpy' has no attribute 'bool'.
The aliases was originally deprecated in NumPy 1.20; for more details and guidance see the original release note at:
    https://numpy.org/devdocs/release/1.20.0-notes.html#deprecations
Location: /usr/share/blender/scripts/modules/bpy/ops.py:113

Blender quit
"""


def test_blender_error_is_the_exception_line_not_the_banner() -> None:
    assert blender_error(NUMPY_BOOL_OUTPUT) == "AttributeError: module 'numpy' has no attribute 'bool'."
    # --python-exit-code adds "Error: script failed, ..., exiting." after the real error.
    report = "Blender 4.2.0\nError: Cannot read file 'x.glb'\nError: script failed, file: '/t/a.py', exiting.\nBlender quit\n"
    assert blender_error(report) == "Error: Cannot read file 'x.glb'"
    assert blender_error("Blender 3.4.1\nsegfault somewhere\n\nBlender quit\n") == "segfault somewhere"
    assert blender_error("") == "no output"


def standing_box_glb(colour: tuple[float, float, float] = (0.5, 0.5, 0.5)) -> bytes:
    """A 0.4 x 1.0 x 0.2 m box (x, y up, z) standing on y = 0, as export_asset writes it, textured in
    one ``colour`` (linear RGB in [0, 1])."""
    m = trimesh.creation.box(extents=(0.4, 1.0, 0.2))
    m.apply_translation((0.0, 0.5, 0.0))
    v, f = np.asarray(m.vertices, np.float32), np.asarray(m.faces, np.int64)
    r = unwrap(v, f, texture_size=32)
    normals = vertex_normals(r.source_verts, r.source_faces)[r.vmapping]
    png = texture_png_bytes(np.broadcast_to(np.asarray(colour, np.float32), (32, 32, 3)).copy())
    return build_glb(r.verts, r.faces, r.uv, normals, png, "box", {})


@needs_blender
def test_fbx_nodes_have_identity_rotation_and_metres(tmp_path) -> None:
    path = write_fbx(tmp_path / "box.fbx", standing_box_glb())
    script = tmp_path / "inspect.py"
    script.write_text(INSPECT)
    out = subprocess.run(["blender", "--background", "--factory-startup", "--python-exit-code", "1",
                          "--python", str(script), "--", str(path)], capture_output=True, timeout=300, text=True)
    assert out.returncode == 0, blender_error(out.stdout + out.stderr)
    objs = [json.loads(ln.split(" ", 1)[1]) for ln in out.stdout.splitlines() if ln.startswith("A3D-OBJ ")]
    assert len(objs) == 1
    obj = objs[0]
    np.testing.assert_allclose(obj["rotation"], 0.0, atol=1e-6)  # was -90 deg about X
    np.testing.assert_allclose(obj["scale"], 1.0, atol=1e-6)
    # Blender is +Z up: 1 m tall standing on the ground, 0.4 m wide, 0.2 m deep.
    np.testing.assert_allclose(obj["lo"], [-0.2, -0.1, 0.0], atol=1e-5)
    np.testing.assert_allclose(obj["hi"], [0.2, 0.1, 1.0], atol=1e-5)


@needs_blender
def test_broken_glb_is_one_line_error_with_blenders_message(tmp_path) -> None:
    with pytest.raises(ExportError) as e:
        write_fbx(tmp_path / "bad.fbx", b"glTF" + b"\x01\x00\x00\x00" + b"\x00" * 16)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("Blender FBX export failed (exit 1): ")
    assert "GLB version must be 2" in msg  # Blender's glTF importer's own words
    assert list(tmp_path.iterdir()) == []  # nothing half-written
