"""GLB (binary glTF 2.0) writer: one self-contained file, PBR metallic-roughness, embedded PNG.

Written by hand (JSON chunk + BIN chunk) so the package needs no glTF library. Layout of the
single buffer: POSITION, NORMAL, TEXCOORD_0 [, TANGENT] (float32), indices (uint32 SCALAR), then
the PNGs (base colour [, normal map]); every view starts on a 4-byte boundary as the spec
requires. glTF is +Y up, right-handed, metres, with the texture origin at the *top-left*, so v
is flipped on the way out (the package's UVs have v up).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from a3d_mesh.atomic import atomic_write_bytes

_GLB_MAGIC = 0x46546C67  # "glTF"
_CHUNK_JSON = 0x4E4F534A
_CHUNK_BIN = 0x004E4942
_FLOAT, _UINT32 = 5126, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_LINEAR, _LINEAR_MIPMAP_LINEAR, _CLAMP_TO_EDGE = 9729, 9987, 33071


def _pad4(data: bytes, fill: bytes) -> bytes:
    return data + fill * ((-len(data)) % 4)


def _views(blobs: list[tuple[bytes, int | None]]) -> tuple[list[dict[str, Any]], bytes]:
    """Lay ``(data, target)`` blobs into one 4-byte-aligned buffer; return (bufferViews, buffer)."""
    views, body = [], bytearray()
    for blob, target in blobs:
        view: dict[str, Any] = {"buffer": 0, "byteOffset": len(body), "byteLength": len(blob)}
        if target is not None:
            view["target"] = target
        views.append(view)
        body += _pad4(blob, b"\x00")
    return views, bytes(body)


def build_glb(
    verts: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray,
    normals: np.ndarray,
    texture_png: bytes,
    name: str = "asset",
    extras: dict[str, Any] | None = None,
    normal_png: bytes | None = None,
    tangents: np.ndarray | None = None,
) -> bytes:
    """Assemble a GLB in memory.

    Args:
        verts: ``[V,3]`` float positions in metres, +Y up (export frame).
        faces: ``[F,3]`` int, counter-clockwise seen from outside.
        uv: ``[V,2]`` float in [0, 1], v up (flipped to glTF's top-left origin here).
        normals: ``[V,3]`` float unit normals.
        texture_png: PNG bytes of the base colour texture (sRGB).
        name: mesh / node / material name.
        extras: JSON-serialisable metadata stored in the scene's ``extras`` (e.g. the set transform).
        normal_png: optional tangent-space normal map PNG (OpenGL / glTF convention, v up).
        tangents: ``[V,4]`` float (unit xyz, w = +-1), required with ``normal_png``.

    Returns: the complete ``.glb`` file contents.
    """
    if (normal_png is None) != (tangents is None):
        raise ValueError("normal_png and tangents go together")
    pos = np.ascontiguousarray(verts, dtype="<f4")
    n_v = int(pos.shape[0])
    idx = np.ascontiguousarray(faces.reshape(-1), dtype="<u4")
    vec = [  # (attribute, array, accessor type)
        ("POSITION", pos, "VEC3"),
        ("NORMAL", np.ascontiguousarray(normals, dtype="<f4"), "VEC3"),
        ("TEXCOORD_0", np.ascontiguousarray(np.stack([uv[:, 0], 1.0 - uv[:, 1]], axis=1), dtype="<f4"), "VEC2"),
    ]
    if tangents is not None:
        vec.append(("TANGENT", np.ascontiguousarray(tangents, dtype="<f4"), "VEC4"))
    images = [texture_png] + ([normal_png] if normal_png is not None else [])
    blobs = [(a.tobytes(), _ARRAY_BUFFER) for _, a, _ in vec] + [(idx.tobytes(), _ELEMENT_ARRAY_BUFFER)]
    views, body = _views(blobs + [(img, None) for img in images])
    accessors: list[dict[str, Any]] = [
        {"bufferView": i, "componentType": _FLOAT, "count": n_v, "type": typ} for i, (_, _, typ) in enumerate(vec)
    ]
    accessors[0].update(min=pos.min(0).tolist(), max=pos.max(0).tolist())  # required for POSITION
    accessors.append({"bufferView": len(vec), "componentType": _UINT32, "count": int(idx.shape[0]),
                      "type": "SCALAR", "min": [int(idx.min())], "max": [int(idx.max())]})
    material: dict[str, Any] = {
        "name": f"{name}_material",
        # Baked albedo only: a non-metal with full roughness is the neutral PBR reading.
        "pbrMetallicRoughness": {"baseColorTexture": {"index": 0, "texCoord": 0},
                                 "metallicFactor": 0.0, "roughnessFactor": 1.0},
        "doubleSided": False,
    }
    if normal_png is not None:
        material["normalTexture"] = {"index": 1, "texCoord": 0}
    doc: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "a3d-mesh export"},
        "scene": 0,
        "scenes": [{"name": name, "nodes": [0], **({"extras": extras} if extras else {})}],
        "nodes": [{"name": name, "mesh": 0}],
        "meshes": [{"name": name, "primitives": [{
            "attributes": {attr: i for i, (attr, _, _) in enumerate(vec)},
            "indices": len(vec), "material": 0, "mode": 4,
        }]}],
        "materials": [material],
        "textures": [{"sampler": 0, "source": i} for i in range(len(images))],
        "images": [{"name": f"{name}_{kind}", "bufferView": len(blobs) + i, "mimeType": "image/png"}
                   for i, kind in enumerate(["basecolor", "normal"][: len(images)])],
        "samplers": [{"magFilter": _LINEAR, "minFilter": _LINEAR_MIPMAP_LINEAR,
                      "wrapS": _CLAMP_TO_EDGE, "wrapT": _CLAMP_TO_EDGE}],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": len(body)}],
    }
    js = _pad4(json.dumps(doc, separators=(",", ":")).encode("utf-8"), b" ")
    total = 12 + 8 + len(js) + 8 + len(body)
    return b"".join([
        struct.pack("<III", _GLB_MAGIC, 2, total),
        struct.pack("<II", len(js), _CHUNK_JSON), js,
        struct.pack("<II", len(body), _CHUNK_BIN), body,
    ])


def write_glb(
    path: str | Path,
    verts: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray,
    normals: np.ndarray,
    texture_png: bytes,
    name: str = "asset",
    extras: dict[str, Any] | None = None,
    normal_png: bytes | None = None,
    tangents: np.ndarray | None = None,
) -> Path:
    """Write a GLB atomically to ``path`` (arguments as :func:`build_glb`); return ``path``."""
    glb = build_glb(verts, faces, uv, normals, texture_png, name, extras, normal_png, tangents)
    return atomic_write_bytes(path, glb)
