"""USDZ writer through usd-core (``pip install a3d-mesh[usd]``): a mesh with a UsdPreviewSurface.

The stage declares ``upAxis = Y`` and ``metersPerUnit = 1`` so AR Quick Look, Blender and
Omniverse read metres, +Y up. UVs go in the ``st`` primvar with v up (USD's convention, same as
the package's). The texture is packaged inside the ``.usdz``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from a3d_mesh.atomic import atomic_path
from .errors import ExportError


def import_pxr() -> tuple:
    """Import usd-core's modules ``(Gf, Sdf, Usd, UsdGeom, UsdShade, UsdUtils, Vt)``; ExportError if absent."""
    try:
        from pxr import Gf, Sdf, Usd, UsdGeom, UsdShade, UsdUtils, Vt
    except ImportError:
        raise ExportError("USDZ export needs usd-core: pip install 'a3d-mesh[usd]' (or usd-core)") from None
    return Gf, Sdf, Usd, UsdGeom, UsdShade, UsdUtils, Vt


def _prim_name(name: str) -> str:
    """A valid USD prim identifier derived from ``name``."""
    safe = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return safe if safe and not safe[0].isdigit() else f"asset_{safe}"


def write_usdz(
    path: str | Path,
    verts: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray,
    normals: np.ndarray,
    texture_png: bytes,
    name: str = "asset",
    normal_png: bytes | None = None,
) -> Path:
    """Write a textured ``.usdz`` atomically; arguments as :func:`a3d_mesh.export.gltf.build_glb`.

    ``normal_png`` (tangent space, OpenGL convention) feeds the preview surface's ``normal``
    input, decoded with scale 2 and bias -1 as UsdPreviewSurface specifies.

    Raises:
        ExportError: usd-core not installed, or packaging failed.
    """
    Gf, Sdf, Usd, UsdGeom, UsdShade, UsdUtils, Vt = import_pxr()
    prim = _prim_name(name)
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="a3d-usdz-") as tmp:
        tex_name = f"{prim}_basecolor.png"
        (Path(tmp) / tex_name).write_bytes(texture_png)
        usdc = Path(tmp) / f"{prim}.usdc"
        stage = Usd.Stage.CreateNew(str(usdc))
        UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y)
        UsdGeom.SetStageMetersPerUnit(stage, 1.0)
        root = UsdGeom.Xform.Define(stage, f"/{prim}")
        stage.SetDefaultPrim(root.GetPrim())
        mesh = UsdGeom.Mesh.Define(stage, f"/{prim}/mesh")
        mesh.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(np.ascontiguousarray(verts, np.float32)))
        mesh.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(faces.shape[0], 3, np.int32)))
        mesh.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(np.ascontiguousarray(faces.reshape(-1), np.int32)))
        mesh.CreateNormalsAttr(Vt.Vec3fArray.FromNumpy(np.ascontiguousarray(normals, np.float32)))
        mesh.SetNormalsInterpolation(UsdGeom.Tokens.vertex)
        mesh.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
        mesh.CreateOrientationAttr(UsdGeom.Tokens.rightHanded)
        mesh.CreateExtentAttr([Gf.Vec3f(*map(float, verts.min(0))), Gf.Vec3f(*map(float, verts.max(0)))])
        st = UsdGeom.PrimvarsAPI(mesh).CreatePrimvar("st", Sdf.ValueTypeNames.TexCoord2fArray, UsdGeom.Tokens.vertex)
        st.Set(Vt.Vec2fArray.FromNumpy(np.ascontiguousarray(uv, np.float32)))

        material = UsdShade.Material.Define(stage, f"/{prim}/material")
        surface = UsdShade.Shader.Define(stage, f"/{prim}/material/surface")
        surface.CreateIdAttr("UsdPreviewSurface")
        surface.CreateInput("metallic", Sdf.ValueTypeNames.Float).Set(0.0)
        surface.CreateInput("roughness", Sdf.ValueTypeNames.Float).Set(1.0)
        reader = UsdShade.Shader.Define(stage, f"/{prim}/material/st_reader")
        reader.CreateIdAttr("UsdPrimvarReader_float2")
        reader.CreateInput("varname", Sdf.ValueTypeNames.String).Set("st")
        texture = UsdShade.Shader.Define(stage, f"/{prim}/material/basecolor")
        texture.CreateIdAttr("UsdUVTexture")
        texture.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(tex_name)
        texture.CreateInput("sourceColorSpace", Sdf.ValueTypeNames.Token).Set("sRGB")
        texture.CreateInput("st", Sdf.ValueTypeNames.Float2).ConnectToSource(reader.ConnectableAPI(), "result")
        rgb = texture.CreateOutput("rgb", Sdf.ValueTypeNames.Float3)
        surface.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f).ConnectToSource(rgb)
        if normal_png is not None:
            nrm_name = f"{prim}_normal.png"
            (Path(tmp) / nrm_name).write_bytes(normal_png)
            nrm = UsdShade.Shader.Define(stage, f"/{prim}/material/normal")
            nrm.CreateIdAttr("UsdUVTexture")
            nrm.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(nrm_name)
            nrm.CreateInput("sourceColorSpace", Sdf.ValueTypeNames.Token).Set("raw")
            nrm.CreateInput("scale", Sdf.ValueTypeNames.Float4).Set(Gf.Vec4f(2, 2, 2, 1))
            nrm.CreateInput("bias", Sdf.ValueTypeNames.Float4).Set(Gf.Vec4f(-1, -1, -1, 0))
            nrm.CreateInput("st", Sdf.ValueTypeNames.Float2).ConnectToSource(reader.ConnectableAPI(), "result")
            nrm_rgb = nrm.CreateOutput("rgb", Sdf.ValueTypeNames.Float3)
            surface.CreateInput("normal", Sdf.ValueTypeNames.Normal3f).ConnectToSource(nrm_rgb)
        material.CreateSurfaceOutput().ConnectToSource(surface.ConnectableAPI(), "surface")
        UsdShade.MaterialBindingAPI.Apply(mesh.GetPrim()).Bind(material)
        stage.GetRootLayer().Save()
        try:
            with atomic_path(path) as out:
                if not UsdUtils.CreateNewUsdzPackage(Sdf.AssetPath(str(usdc)), str(out)):
                    raise ExportError(f"usd-core could not package {path.name}")
        except OSError as exc:
            raise ExportError(f"USDZ export wrote no file: {exc}") from None
    return path
