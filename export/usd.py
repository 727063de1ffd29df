"""USD writers (usd-core): a `.usdc` with its texture beside it, and a self-contained `.usdz`.

Layout of every stage:
    /<name>                 Xform, kind=component, the defaultPrim
    /<name>/geom/<part>     Mesh: points, normals (vertex), primvars:st (vertex), extent
    /<name>/materials/<m>   Material -> UsdPreviewSurface <- UsdUVTexture <- UsdPrimvarReader_float2("st")
`upAxis` and `metersPerUnit` are always authored (an engine that finds neither guesses, and
Unreal and Unity guess differently).  The texture is tagged `sourceColorSpace = "sRGB"`.
USD's st origin is bottom-left like MeshAsset.uvs, so UVs are written unchanged; triangles are
counter-clockwise (USD's default rightHanded orientation), as in glTF.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from orbitforge.errors import InputError
from orbitforge.mesh import MeshAsset

logger = logging.getLogger(__name__)

_ROUGHNESS = 0.8  # as the GLB material: captures carry no roughness map
_IDENT_RE = re.compile(r"[^A-Za-z0-9_]")


def usd_name(text: str) -> str:
    """A valid USD prim name (letters, digits, _; not starting with a digit)."""
    name = _IDENT_RE.sub("_", text) or "asset"
    return f"_{name}" if name[0].isdigit() else name


def write_usd(parts: Sequence[MeshAsset], path: Path, *, name: str, up_axis: Literal["Y", "Z"],
              meters_per_unit: float, extras: dict | None = None) -> list[Path]:
    """Write `path` (.usdc, .usda or .usdz) for parts already in stage coordinates.

    A .usdc/.usda gets its textures in `path.parent / "textures"`; a .usdz packs them inside.
    Returns every file written.
    """
    path = Path(path)
    if path.suffix not in (".usdc", ".usda", ".usdz"):
        raise InputError(f"USD output must end in .usdc, .usda or .usdz, got {path.name}")
    if not parts:
        raise InputError(f"{name}: nothing to export (no mesh parts)")
    if path.suffix == ".usdz":
        from pxr import UsdUtils

        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".usdz-") as tmp:
            inner = Path(tmp) / f"{path.stem}.usdc"
            _write_stage(parts, inner, name=name, up_axis=up_axis, meters_per_unit=meters_per_unit, extras=extras)
            # CreateNewUsdzPackage resolves relative asset paths from the layer and packs them
            if not UsdUtils.CreateNewUsdzPackage(str(inner), str(path)):
                raise InputError(f"usd-core could not package {path.name}")
        return [path]
    return _write_stage(parts, path, name=name, up_axis=up_axis, meters_per_unit=meters_per_unit, extras=extras)


def _write_stage(parts, path: Path, *, name, up_axis, meters_per_unit, extras) -> list[Path]:
    from PIL import Image
    from pxr import Gf, Kind, Sdf, Usd, UsdGeom, UsdShade, Vt

    written = [path]
    stage = Usd.Stage.CreateNew(str(path))
    # 1. stage metadata: up axis, units, default prim
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y if up_axis == "Y" else UsdGeom.Tokens.z)
    UsdGeom.SetStageMetersPerUnit(stage, float(meters_per_unit))
    root_name = usd_name(name)
    root = UsdGeom.Xform.Define(stage, f"/{root_name}")
    stage.SetDefaultPrim(root.GetPrim())
    Usd.ModelAPI(root.GetPrim()).SetKind(Kind.Tokens.component)
    if extras:
        root.GetPrim().SetCustomDataByKey("orbitforge", {k: str(v) for k, v in extras.items()})
    UsdGeom.Scope.Define(stage, f"/{root_name}/geom")
    UsdGeom.Scope.Define(stage, f"/{root_name}/materials")

    for i, part in enumerate(parts):
        part_name = usd_name(part.name if len(parts) > 1 else name)
        if len(parts) > 1:
            part_name = f"{part_name}_{i}"
        # 2. geometry
        mesh = UsdGeom.Mesh.Define(stage, f"/{root_name}/geom/{part_name}")
        v = part.vertices.astype(np.float32)
        mesh.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(v))
        mesh.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(len(part.faces), 3, np.int32)))
        mesh.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(part.faces.reshape(-1).astype(np.int32)))
        mesh.CreateExtentAttr(Vt.Vec3fArray([Gf.Vec3f(*map(float, v.min(0))), Gf.Vec3f(*map(float, v.max(0)))]))
        mesh.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)  # a game mesh, not a subdiv cage
        mesh.CreateOrientationAttr(UsdGeom.Tokens.rightHanded)
        mesh.CreateNormalsAttr(Vt.Vec3fArray.FromNumpy(part.vertex_normals.astype(np.float32)))
        mesh.SetNormalsInterpolation(UsdGeom.Tokens.vertex)
        api = UsdGeom.PrimvarsAPI(mesh)
        if part.uvs is not None:
            st = api.CreatePrimvar("st", Sdf.ValueTypeNames.TexCoord2fArray, UsdGeom.Tokens.vertex)
            st.Set(Vt.Vec2fArray.FromNumpy(part.uvs.astype(np.float32)))
        if part.vertex_colours is not None and part.base_colour is None:
            col = api.CreatePrimvar("displayColor", Sdf.ValueTypeNames.Color3fArray, UsdGeom.Tokens.vertex)
            col.Set(Vt.Vec3fArray.FromNumpy(_srgb_to_linear(part.vertex_colours[:, :3] / 255.0).astype(np.float32)))

        # 3. material: UsdPreviewSurface, textured through a primvar reader
        mat_path = f"/{root_name}/materials/{part_name}_material"
        material = UsdShade.Material.Define(stage, mat_path)
        surface = UsdShade.Shader.Define(stage, f"{mat_path}/PreviewSurface")
        surface.CreateIdAttr("UsdPreviewSurface")
        surface.CreateInput("metallic", Sdf.ValueTypeNames.Float).Set(0.0)
        surface.CreateInput("roughness", Sdf.ValueTypeNames.Float).Set(_ROUGHNESS)
        factor = np.asarray(part.base_colour_factor, np.float64)
        if part.base_colour is not None:
            tex_dir = path.parent / "textures"
            tex_dir.mkdir(exist_ok=True)
            tex_file = tex_dir / f"{path.stem}_{part_name}_basecolor.png"
            Image.fromarray(part.base_colour[..., :3]).save(tex_file)
            written.append(tex_file)
            reader = UsdShade.Shader.Define(stage, f"{mat_path}/stReader")
            reader.CreateIdAttr("UsdPrimvarReader_float2")
            reader.CreateInput("varname", Sdf.ValueTypeNames.String).Set("st")
            texture = UsdShade.Shader.Define(stage, f"{mat_path}/baseColorTexture")
            texture.CreateIdAttr("UsdUVTexture")
            texture.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(f"./textures/{tex_file.name}")
            texture.CreateInput("sourceColorSpace", Sdf.ValueTypeNames.Token).Set("sRGB")
            texture.CreateInput("wrapS", Sdf.ValueTypeNames.Token).Set("repeat")
            texture.CreateInput("wrapT", Sdf.ValueTypeNames.Token).Set("repeat")
            if not np.allclose(factor[:3], 1.0):
                texture.CreateInput("scale", Sdf.ValueTypeNames.Float4).Set(Gf.Vec4f(*map(float, factor[:3]), 1.0))
            texture.CreateInput("st", Sdf.ValueTypeNames.Float2).ConnectToSource(
                reader.ConnectableAPI(), "result")
            texture.CreateOutput("rgb", Sdf.ValueTypeNames.Float3)
            surface.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f).ConnectToSource(
                texture.ConnectableAPI(), "rgb")
        else:
            lin = _srgb_to_linear(factor[:3]) if part.vertex_colours is None else np.array([1.0, 1.0, 1.0])
            surface.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f).Set(Gf.Vec3f(*map(float, lin)))
        material.CreateSurfaceOutput().ConnectToSource(surface.ConnectableAPI(), "surface")
        UsdShade.MaterialBindingAPI.Apply(mesh.GetPrim()).Bind(material)
    stage.GetRootLayer().Save()
    return written


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB-encoded [0, 1] -> linear (IEC 61966-2-1); USD colour inputs are linear."""
    c = np.asarray(c, np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
