"""GLB writers for meshes: the asset, its LODs and a collision hull (trimesh does the container).

Rules every file follows, because engines trip on each of them:
* PBR metallic-roughness material (metallic 0, roughness 0.8: a capture has no metal map), the
  base-colour texture embedded as PNG (lossless, default) or JPEG, never WebP (Unreal's
  Interchange rejects EXT_texture_webp; glTF core allows only PNG and JPEG).
* The texture stays sRGB-encoded as stored: glTF defines baseColorTexture as sRGB, so no
  conversion happens, and no ICC profile or gamma chunk is written.
* Vertex normals are written (engines otherwise recompute them, hard-edged in Godot 3).
* Nodes and meshes carry the asset's name; LOD nodes end in `_LOD<i>` and the collision node
  starts with `UCX_` (Unreal's collision prefix).
The serialisers return bytes; `export.stage` writes files.
"""

from __future__ import annotations

import io
import json
import logging
import struct
from dataclasses import dataclass, replace
from typing import Literal, Sequence

import numpy as np

from orbitforge.errors import InputError
from orbitforge.mesh import MeshAsset

logger = logging.getLogger(__name__)

GENERATOR = "orbitforge"
_GLB_MAGIC = b"glTF"
_CHUNK_JSON = 0x4E4F534A


@dataclass(frozen=True)
class GlbConfig:
    """Options for the mesh GLBs."""

    lod_fractions: tuple[float, ...] = (1.0, 0.25, 0.06)
    """Face count of each LOD as a fraction of LOD0; the first must be 1.0."""
    collision: Literal["convex_hull", "none"] = "convex_hull"
    """Collision mesh: one convex hull (cheap, exact for convex props) or none."""
    texture_format: Literal["png", "jpeg"] = "png"
    """Embedded image type.  PNG is lossless; JPEG is ~5x smaller for photographic textures."""
    jpeg_quality: int = 90
    """JPEG quality when texture_format is "jpeg"."""

    def __post_init__(self) -> None:
        if not self.lod_fractions or self.lod_fractions[0] != 1.0:
            raise InputError(f"lod_fractions must start with 1.0 (LOD0 is the asset), got {self.lod_fractions}")
        if any(not 0 < f <= 1 for f in self.lod_fractions):
            raise InputError(f"lod_fractions must lie in (0, 1], got {self.lod_fractions}")
        if self.texture_format not in ("png", "jpeg"):
            raise InputError(f"texture_format must be 'png' or 'jpeg' (never WebP), got {self.texture_format!r}")


def decimate(part: MeshAsset, faces: int) -> MeshAsset:
    """Quadric decimation to at most about `faces` triangles (fast-simplification), UVs kept.

    Collapses are replayed so every surviving vertex keeps its own position, UV and colour.
    When the mesh has UVs, borders (which include UV seams in a split-vertex mesh) are preserved
    so charts do not tear apart; the result may then keep more faces than asked.
    """
    import fast_simplification

    if faces < 4:
        raise InputError(f"a face budget must be at least 4, got {faces}")
    if len(part.faces) <= faces:
        return part
    points = part.vertices.astype(np.float64)
    _, _, collapses = fast_simplification.simplify(
        points, part.faces, target_count=int(faces), return_collapses=True,
        preserve_border=part.uvs is not None)
    new_points, new_faces, mapping = fast_simplification.replay_simplification(points, part.faces, collapses)
    survivors = np.setdiff1d(np.arange(len(points)), collapses[:, 1]) if len(collapses) else np.arange(len(points))

    def carry(attr: np.ndarray | None) -> np.ndarray | None:
        if attr is None:
            return None
        out = np.zeros((len(new_points), attr.shape[1]), attr.dtype)
        out[mapping[survivors]] = attr[survivors]  # [V', D]
        return out

    new_faces = np.asarray(new_faces, np.int32)
    new_faces = new_faces[(new_faces[:, 0] != new_faces[:, 1]) & (new_faces[:, 1] != new_faces[:, 2])
                          & (new_faces[:, 0] != new_faces[:, 2])]
    if len(new_faces) == 0:
        raise InputError(f"decimating {part.name!r} to {faces} faces left no triangles; ask for more faces")
    # drop vertices no face uses (they would get zero normals, which the validator rejects)
    used = np.unique(new_faces)  # [V'']
    remap = np.full(len(new_points), -1, np.int32)
    remap[used] = np.arange(len(used), dtype=np.int32)
    uvs, colours = carry(part.uvs), carry(part.vertex_colours)
    return replace(part, vertices=np.asarray(new_points, np.float32)[used], faces=remap[new_faces], normals=None,
                   uvs=None if uvs is None else uvs[used],
                   vertex_colours=None if colours is None else colours[used], _cache={})


def lods(part: MeshAsset, fractions: Sequence[float]) -> list[MeshAsset]:
    """LOD0 (the part itself) followed by decimated copies at each fraction of its faces."""
    out = [part]
    for f in fractions[1:]:
        out.append(decimate(part, max(4, int(round(len(part.faces) * f)))))
    return out


def convex_hull(parts: Sequence[MeshAsset], name: str) -> MeshAsset:
    """One convex hull around every part (qhull through trimesh), untextured."""
    import trimesh

    pts = np.concatenate([p.vertices for p in parts]).astype(np.float64)
    hull = trimesh.convex.convex_hull(pts)
    if len(hull.faces) == 0:
        raise InputError(f"{name}: the convex hull is empty (all points coplanar?)")
    return MeshAsset(hull.vertices, hull.faces, normals=np.asarray(hull.vertex_normals), name=name,
                     base_colour_factor=(0.5, 0.8, 0.5, 1.0))


def _pil_texture(tex: np.ndarray, fmt: str, quality: int):
    """A PIL image that trimesh embeds as-is: JPEG is pre-encoded (trimesh keeps JPEG bytes),
    anything else goes out as PNG."""
    from PIL import Image

    image = Image.fromarray(tex)
    if fmt == "jpeg":
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        image = Image.open(buf)
        image.load()
    return image


def mesh_glb_bytes(parts: Sequence[MeshAsset], name: str, config: GlbConfig = GlbConfig(),
                   extras: dict | None = None) -> bytes:
    """A GLB of the parts, one named node per part (`name`, or `name_<i>` for several parts).

    Args:
        parts: meshes already in glTF file coordinates (see `export.presets.place_mesh`).
        name: node/mesh name.
        extras: JSON written to `asset.extras` (orbitforge records engine, units and pivot there).
    """
    import trimesh

    if not parts:
        raise InputError(f"{name}: nothing to export (no mesh parts)")
    scene = trimesh.Scene()
    for i, part in enumerate(parts):
        node = name if len(parts) == 1 else f"{name}_{i}"
        geom = _with_unit_normals(part).to_trimesh()
        if part.base_colour is not None:
            geom.visual.material.baseColorTexture = _pil_texture(part.base_colour, config.texture_format,
                                                                 config.jpeg_quality)
            geom.visual.material.name = f"{node}_material"
        scene.add_geometry(geom, node_name=node, geom_name=node)
    data = trimesh.exchange.gltf.export_glb(scene, include_normals=True, extension_webp=False)
    return _edit_json(data, lambda doc: _finish_doc(doc, extras))


def _with_unit_normals(part: MeshAsset) -> MeshAsset:
    """Normals renormalised; a vertex whose normal vanished (only degenerate faces) gets +Y,
    because glTF requires unit NORMAL vectors (ACCESSOR_VECTOR3_NON_UNIT)."""
    n = part.vertex_normals.astype(np.float64)
    length = np.linalg.norm(n, axis=1)
    bad = ~(length > 1e-6)
    if bad.any():
        logger.warning("%s: %d vertices had no usable normal; set to +Y", part.name, int(bad.sum()))
    n = np.where(bad[:, None], np.array([0.0, 1.0, 0.0]), n / np.where(bad, 1.0, length)[:, None])
    return replace(part, normals=n.astype(np.float32), _cache={})


def _finish_doc(doc: dict, extras: dict | None) -> None:
    doc["asset"]["generator"] = GENERATOR
    if extras:
        doc["asset"]["extras"] = extras
    for image in doc.get("images", ()):
        if image.get("mimeType") not in ("image/png", "image/jpeg"):
            raise AssertionError(f"non-core image type {image.get('mimeType')} in a GLB")


def _edit_json(glb: bytes, edit) -> bytes:
    """The GLB with its JSON chunk passed through `edit(dict)`, chunk lengths and padding kept."""
    magic, version, _ = struct.unpack_from("<4sII", glb, 0)
    json_len, kind = struct.unpack_from("<II", glb, 12)
    if magic != _GLB_MAGIC or kind != _CHUNK_JSON:
        raise ValueError("not a GLB with a leading JSON chunk")
    doc = json.loads(glb[20:20 + json_len])
    edit(doc)
    text = json.dumps(doc, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)  # JSON chunk is space-padded to 4 bytes (glTF 2.0, GLB format)
    rest = glb[20 + json_len:]
    body = struct.pack("<II", len(text), _CHUNK_JSON) + text + rest
    return struct.pack("<4sII", _GLB_MAGIC, version, 12 + len(body)) + body
