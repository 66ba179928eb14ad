"""Asset export for game engines: cleanup, UV atlas, baked texture, GLB / OBJ / FBX / USDZ.

Entry point: :func:`export_asset` (one object of a set, prompt or hybrid), with the set's shared
:class:`SetTransform` from :func:`set_transform` (one scale, ground at y = 0, shared vertical
axis; see :mod:`a3d_mesh.export.frame`). Every file is written atomically. User-facing problems
raise :class:`ExportError` with a one-line message.
"""

from .asset import FORMATS, export_asset
from a3d_mesh.geometry.regularizers import vertex_normals

from .bake import bake_texture, texture_png_bytes
from .cleanup import apply_face_budget, clean_mesh, decimate
from .errors import ExportError
from .fbx import write_fbx
from .frame import SetTransform, set_transform
from .gltf import build_glb, write_glb
from .normalmap import bake_normal_map, vertex_tangents
from .obj import write_obj
from .usdz import write_usdz
from .uv import UVResult, unwrap

__all__ = [
    "FORMATS", "ExportError", "SetTransform", "UVResult", "apply_face_budget", "bake_normal_map",
    "bake_texture", "build_glb", "clean_mesh", "decimate", "export_asset", "set_transform",
    "texture_png_bytes", "unwrap", "vertex_normals", "vertex_tangents", "write_fbx", "write_glb",
    "write_obj", "write_usdz",
]
