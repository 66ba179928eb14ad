"""Render the README pictures: a run folder's exported GLBs in Blender (Cycles, CPU), side by side.

    python docs/blender_still.py runs/toy/export/chair.glb runs/toy/export/bench.glb ... --out docs/x.png

What a user gets when they drop the files into Blender: each GLB imported as it is (its own frame,
metres, base on y = 0 after export grounding), placed along X in the order given with a gap of
``--gap`` metres between bounding boxes, on a white floor under one sun and a sky, seen by one camera
from the front-right at ``--elevation`` degrees. Nothing is smoothed or re-shaded: the pictures
show the meshes and baked textures as exported.

Runs Blender in the background (``--factory-startup``, ``--python-exit-code 1``); Blender's own
error line is printed when it fails. Needs ``blender`` on PATH (3.x or 4.x).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from a3d_mesh.export.fbx import BLENDER_GLTF_PRELUDE, blender_error

# Runs inside Blender: glTF import, layout along X, floor, sun, camera framing all objects, Cycles.
_SCRIPT = BLENDER_GLTF_PRELUDE + r'''
import json, math
from mathutils import Vector

args = json.loads(sys.argv[sys.argv.index("--") + 1])
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
x = 0.0
lo, hi = Vector((1e9, 1e9, 1e9)), Vector((-1e9, -1e9, -1e9))
for path in args["glbs"]:
    before = set(bpy.data.objects)
    bpy.ops.import_scene.gltf(filepath=path)
    meshes = [o for o in set(bpy.data.objects) - before if o.type == "MESH"]
    corners = [o.matrix_world @ Vector(c) for o in meshes for c in o.bound_box]
    mn = Vector([min(c[i] for c in corners) for i in range(3)])
    mx = Vector([max(c[i] for c in corners) for i in range(3)])
    roots = [o for o in set(bpy.data.objects) - before if o.parent is None]
    shift = x - mn.x
    for o in roots:
        o.location.x += shift
    x += (mx.x - mn.x) + args["gap"]
    lo = Vector((min(lo.x, mn.x + shift), min(lo.y, mn.y), min(lo.z, mn.z)))
    hi = Vector((max(hi.x, mx.x + shift), max(hi.y, mx.y), max(hi.z, mx.z)))
centre = (lo + hi) / 2
# Blender is Z-up; glTF's +Y up arrives as +Z, glTF's front (+Z) as Blender's -Y.
bpy.ops.mesh.primitive_plane_add(size=200, location=(centre.x, centre.y, 0.0))
floor = bpy.context.active_object
mat = bpy.data.materials.new("floor")
mat.use_nodes = True
mat.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (0.9, 0.9, 0.9, 1.0)
floor.data.materials.append(mat)
bpy.ops.object.light_add(type="SUN", rotation=(math.radians(40), 0.0, math.radians(30)))
bpy.context.active_object.data.energy = 3.0
bpy.context.active_object.data.angle = math.radians(10)
world = bpy.data.worlds.new("sky")
world.use_nodes = True
world.node_tree.nodes["Background"].inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.6
scene.world = world
el, az = math.radians(args["elevation"]), math.radians(args["azimuth"])
size = max((hi - lo).length, 1e-3)
fov = math.radians(35.0)
dist = 0.75 * size / math.tan(fov / 2)
look = Vector((centre.x, centre.y, (hi.z - lo.z) * 0.45))
eye = look + dist * Vector((math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)))
bpy.ops.object.camera_add(location=eye)
cam = bpy.context.active_object
cam.data.angle = fov
cam.rotation_euler = (look - eye).to_track_quat("-Z", "Y").to_euler()
scene.camera = cam
scene.render.engine = "CYCLES"
scene.cycles.device = "CPU"
scene.cycles.samples = args["samples"]
# Debian's Blender is built without OpenImageDenoise, which Cycles would otherwise use.
scene.cycles.use_denoising = False
scene.render.resolution_x, scene.render.resolution_y = args["width"], args["height"]
scene.render.film_transparent = False
scene.view_settings.view_transform = "Standard"
scene.render.filepath = args["out"]
bpy.ops.render.render(write_still=True)
'''


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("glbs", nargs="+", type=Path, help="GLB files, placed left to right")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--width", type=int, default=1200)
    p.add_argument("--height", type=int, default=500)
    p.add_argument("--gap", type=float, default=0.25, help="metres between neighbours' bounding boxes")
    p.add_argument("--elevation", type=float, default=20.0, help="camera elevation, degrees")
    p.add_argument("--azimuth", type=float, default=25.0, help="camera azimuth from the front, degrees")
    p.add_argument("--samples", type=int, default=48, help="Cycles samples per pixel")
    p.add_argument("--blender", default="blender")
    a = p.parse_args(argv)
    missing = [str(g) for g in a.glbs if not g.is_file()]
    if missing:
        print(f"error: no such GLB: {', '.join(missing)}", file=sys.stderr)
        return 2
    settings = {"glbs": [str(g.resolve()) for g in a.glbs], "out": str(a.out.resolve()), "width": a.width,
                "height": a.height, "gap": a.gap, "elevation": a.elevation, "azimuth": a.azimuth,
                "samples": a.samples}
    exe = shutil.which(a.blender)
    if exe is None:
        print(f"error: {a.blender!r} not found: install Blender and put it on PATH (or pass --blender)", file=sys.stderr)
        return 2
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "still.py"
        script.write_text(_SCRIPT, encoding="utf-8")
        cmd = [exe, "--background", "--factory-startup", "--python-exit-code", "1", "--python", str(script),
               "--", json.dumps(settings)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0 or not a.out.is_file():
        print(f"error: Blender failed (exit {proc.returncode}): {blender_error(proc.stdout + proc.stderr)}",
              file=sys.stderr)
        return 1
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
