"""MeshAsset: a triangle mesh with one material, and its IO through trimesh.

A loaded file becomes a tuple of `MeshAsset` parts, one per primitive/material, with the scene
graph's transforms already applied, so the renderer and exporters never walk a scene graph.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from orbitforge.errors import InputError

logger = logging.getLogger(__name__)

MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl", ".off")


@dataclass(frozen=True, eq=False)
class MeshAsset:
    """One primitive with one material.

    Attributes:
        vertices: (V, 3) float32 positions, world +Y up, in `units`.
        faces: (F, 3) int32 counter-clockwise triangles.
        normals: (V, 3) float32 unit vertex normals, or None (then computed on demand).
        uvs: (V, 2) float32 texture coordinates in trimesh/OBJ convention (origin bottom-left,
            v up); glTF's top-left origin is converted by trimesh on load and save.
        base_colour: (H, W, 3 or 4) uint8 sRGB base-colour texture, or None.
        vertex_colours: (V, 4) uint8 sRGBA, or None.
        base_colour_factor: (4,) float RGBA multiplier, glTF's baseColorFactor.
        name: node name written to exported files.
        units: length unit of the vertices ("m" unless recorded otherwise).
        up_axis: "+Y" inside orbitforge; engine presets convert at export.
    """

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray | None = None
    uvs: np.ndarray | None = None
    base_colour: np.ndarray | None = None
    vertex_colours: np.ndarray | None = None
    base_colour_factor: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    name: str = "mesh"
    units: str = "m"
    up_axis: str = "+Y"
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        v = np.ascontiguousarray(self.vertices, dtype=np.float32)
        f = np.ascontiguousarray(self.faces, dtype=np.int32)
        if v.ndim != 2 or v.shape[1] != 3:
            raise InputError(f"mesh {self.name!r}: vertices must be (V, 3), got {v.shape}")
        if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
            raise InputError(f"mesh {self.name!r} has no triangle faces (faces shape {f.shape})")
        if f.min() < 0 or f.max() >= len(v):
            raise InputError(f"mesh {self.name!r}: face indices out of range for {len(v)} vertices")
        if not np.isfinite(v).all():
            raise InputError(f"mesh {self.name!r}: vertices contain NaN or inf")
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "faces", f)
        for name, width, dtype in (("normals", 3, np.float32), ("uvs", 2, np.float32), ("vertex_colours", 4, np.uint8)):
            arr = getattr(self, name)
            if arr is not None:
                arr = np.ascontiguousarray(arr, dtype=dtype)
                if arr.shape != (len(v), width):
                    raise InputError(f"mesh {self.name!r}: {name} must be ({len(v)}, {width}), got {arr.shape}")
                object.__setattr__(self, name, arr)
        if self.base_colour is not None:
            tex = np.ascontiguousarray(self.base_colour, dtype=np.uint8)
            if tex.ndim != 3 or tex.shape[2] not in (3, 4):
                raise InputError(f"mesh {self.name!r}: texture must be (H, W, 3|4) uint8, got {tex.shape}")
            if self.uvs is None:
                raise InputError(f"mesh {self.name!r} has a texture but no UVs")
            object.__setattr__(self, "base_colour", tex)
        object.__setattr__(self, "base_colour_factor", tuple(float(c) for c in self.base_colour_factor))

    @property
    def vertex_normals(self) -> np.ndarray:
        """(V, 3) float32 unit normals: the stored ones, else area-weighted from the faces."""
        if self.normals is not None:
            return self.normals
        if "normals" not in self._cache:
            self._cache["normals"] = self.to_trimesh().vertex_normals.astype(np.float32)
        return self._cache["normals"]

    def with_vertices(self, vertices: np.ndarray) -> "MeshAsset":
        """The same mesh moved; stored normals are dropped because they no longer hold."""
        return replace(self, vertices=vertices, normals=None, _cache={})

    def to_trimesh(self):
        """A trimesh.Trimesh with a PBR material (texture, factor) or vertex colours."""
        import trimesh
        from PIL import Image

        if self.base_colour is not None:
            material = trimesh.visual.material.PBRMaterial(
                name=self.name,
                baseColorTexture=Image.fromarray(self.base_colour),
                baseColorFactor=np.round(np.asarray(self.base_colour_factor) * 255).astype(np.uint8),
                metallicFactor=0.0,
                roughnessFactor=0.8,
            )
            visual = trimesh.visual.TextureVisuals(uv=self.uvs, material=material)
        elif self.vertex_colours is not None:
            visual = trimesh.visual.ColorVisuals(vertex_colors=self.vertex_colours)
        else:
            material = trimesh.visual.material.PBRMaterial(
                name=self.name,
                baseColorFactor=np.round(np.asarray(self.base_colour_factor) * 255).astype(np.uint8),
                metallicFactor=0.0,
                roughnessFactor=0.8,
            )
            visual = trimesh.visual.TextureVisuals(material=material)
        return trimesh.Trimesh(
            self.vertices, self.faces, vertex_normals=self.normals, visual=visual, process=False
        )


def bounds(parts: Sequence[MeshAsset]) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned (min, max) corners over all parts, each (3,) float64."""
    allv = np.concatenate([p.vertices for p in parts]).astype(np.float64)
    return allv.min(axis=0), allv.max(axis=0)


def bounding_sphere(parts: Sequence[MeshAsset]) -> tuple[np.ndarray, float]:
    """Centre of the bounding box and the radius that encloses every vertex from it."""
    lo, hi = bounds(parts)
    centre = (lo + hi) / 2
    allv = np.concatenate([p.vertices for p in parts]).astype(np.float64)
    return centre, float(np.linalg.norm(allv - centre, axis=1).max())


def _from_trimesh(geom, name: str) -> MeshAsset:
    """One trimesh geometry (transforms already applied) as a MeshAsset."""
    from trimesh.visual.material import PBRMaterial

    uvs = texture = colours = None
    factor = (1.0, 1.0, 1.0, 1.0)
    visual = geom.visual
    if visual.kind == "texture" or isinstance(getattr(visual, "material", None), PBRMaterial):
        material = visual.material
        if isinstance(material, PBRMaterial):
            image = material.baseColorTexture
            if material.baseColorFactor is not None:
                factor = tuple(np.asarray(material.baseColorFactor, dtype=np.float64) / 255.0)
        else:  # SimpleMaterial from OBJ/MTL
            image = getattr(material, "image", None)
            diffuse = getattr(material, "diffuse", None)
            if diffuse is not None:
                factor = tuple(np.asarray(diffuse, dtype=np.float64) / 255.0)
        if image is not None and getattr(visual, "uv", None) is not None and len(visual.uv) == len(geom.vertices):
            texture = np.asarray(image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB"))
            uvs = np.asarray(visual.uv, dtype=np.float32)
    elif visual.kind in ("vertex", "face"):
        colours = np.asarray(visual.vertex_colors, dtype=np.uint8)
    normals = None
    if "vertex_normals" in geom._cache:
        normals = np.asarray(geom.vertex_normals, dtype=np.float32)
    return MeshAsset(
        vertices=geom.vertices,
        faces=geom.faces,
        normals=normals,
        uvs=uvs,
        base_colour=texture,
        vertex_colours=colours,
        base_colour_factor=factor,
        name=name,
    )


def load_meshes(path: Path | str) -> tuple[MeshAsset, ...]:
    """Load a GLB/glTF/OBJ/PLY/STL/OFF file as MeshAsset parts, scene transforms applied.

    Raises InputError (one line) for a missing or unreadable file or one with no faces.
    """
    import trimesh

    path = Path(path)
    if not path.exists():
        raise InputError(f"asset not found: {path}")
    if path.is_dir():
        raise InputError(f"asset {path} is a folder; give a mesh file ({', '.join(MESH_SUFFIXES)})")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise InputError(f"asset {path} has an unsupported type {path.suffix!r}; use {', '.join(MESH_SUFFIXES)}")
    try:
        scene = trimesh.load(str(path), force="scene", process=False)
        geoms = scene.dump()
    except Exception as exc:  # trimesh raises many types (ValueError, KeyError, struct.error...)
        raise InputError(f"could not read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    parts = []
    for i, geom in enumerate(g for g in geoms if isinstance(g, trimesh.Trimesh)):
        if len(geom.faces) == 0:
            continue
        name = geom.metadata.get("name") or f"{path.stem}_{i}"
        parts.append(_from_trimesh(geom, str(name)))
    if not parts:
        raise InputError(f"asset {path} has no triangle faces; export it as a triangle mesh")
    return tuple(parts)


def to_glb_bytes(parts: Sequence[MeshAsset]) -> bytes:
    """A binary glTF of the parts as separate named nodes (trimesh's exporter)."""
    import trimesh

    scene = trimesh.Scene()
    for part in parts:
        scene.add_geometry(part.to_trimesh(), node_name=part.name, geom_name=part.name)
    return scene.export(file_type="glb")


def load_meshes_from_glb_bytes(data: bytes) -> tuple[MeshAsset, ...]:
    """Inverse of `to_glb_bytes` for round trips in memory."""
    import trimesh

    scene = trimesh.load(io.BytesIO(data), file_type="glb", force="scene", process=False)
    return tuple(_from_trimesh(g, str(g.metadata.get("name") or f"part_{i}")) for i, g in enumerate(scene.dump()))
