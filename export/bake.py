"""Texture baking: a base-colour texture for a UV-mapped mesh, from the clip's input frames.

The colours come from the captured frames, not from splat renders, so the texture keeps the
detail the Gaussians blurred away.  Per texel: its surface point and normal (rasterised in UV
space), then every frame that sees it (in the frame, inside the object mask when there is one,
and passing a depth test against the mesh's own z-buffer from `orbitforge.render`) contributes
its bilinear colour in linear light, weighted by cos(view angle)^p so that grazing views,
which smear texels, count little.  Texels no frame sees take the colour of the nearest seen
surface point in 3D; texels outside every chart take the colour of the nearest chart texel
(seam dilation), so bilinear and mip-mapped lookups never pull in a background colour.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from orbitforge.clip import Clip
from orbitforge.errors import InputError
from orbitforge.mesh import MeshAsset
from orbitforge.render import RenderConfig, linear_to_srgb, render, srgb_to_linear

logger = logging.getLogger(__name__)

_UV_SUBPIXEL_BITS = 4  # cv2 fillConvexPoly `shift`: vertices at 1/16 texel precision


@dataclass(frozen=True)
class BakeConfig:
    """How base colour is gathered from the frames."""

    size: int = 1024
    """Side of the square texture in texels."""
    angle_power: float = 4.0
    """Weight of a view is cos(angle between normal and view ray)^angle_power: sharper texels
    from frontal views, at the cost of less averaging of noise."""
    min_cos: float = 0.2
    """Views more grazing than this cosine (about 78 degrees) are ignored."""
    depth_tolerance: float = 0.01
    """A texel is visible in a view when its camera z is within this fraction of the mesh's
    bounding-box diagonal of the mesh's own depth at that pixel."""
    visibility_scale: int = 2
    """The depth-test z-buffers are rendered at this multiple of the frame size, so thin parts
    and silhouettes are tested at sub-pixel precision."""
    mask_erode_px: int = 2
    """With clip masks, pixels this close to the mask's edge are not sampled: antialiased edge
    pixels mix the object with the background, and bilinear lookups reach one pixel further."""


@dataclass(frozen=True)
class BakeResult:
    """A baked texture and how much of the surface the frames saw.

    Attributes:
        texture: (size, size, 3) uint8 sRGB base colour, v up (trimesh/OBJ convention).
        seen_fraction: share of chart texels that at least one frame saw.
    """

    texture: np.ndarray
    seen_fraction: float


def bake_base_colour(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, normals: np.ndarray, clip: Clip,
                     config: BakeConfig = BakeConfig()) -> BakeResult:
    """Bake the clip's frames into a texture over the mesh's UV atlas.

    Args:
        vertices: (V, 3) float positions in the clip's world (+Y up).
        faces: (F, 3) int CCW triangles.
        uvs: (V, 2) float in [0, 1], v up; charts must not overlap (an xatlas atlas).
        normals: (V, 3) float unit vertex normals, outward.
        clip: the frames (T, H, W, 3) uint8 sRGB with their cameras, optional masks.
    """
    if clip.cameras is None:
        raise InputError("texture baking needs the clip's cameras: run `orbitforge poses` first")
    size = int(config.size)
    face_id, bary = _rasterize_uv(faces, uvs, size)  # [S, S], [S, S, 3]
    inside = face_id >= 0
    f = face_id[inside]  # [P]
    b = bary[inside][..., None]  # [P, 3, 1]
    points = (vertices[faces[f]] * b).sum(axis=1)  # [P, 3]
    nrm = (normals[faces[f]] * b).sum(axis=1)
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)  # [P, 3]

    colour, weight = _gather(vertices, faces, points, nrm, clip, config)  # [P, 3] linear, [P]
    seen = weight > 0
    if not seen.any():
        raise InputError("no input frame sees the mesh: the clip's cameras do not look at it; "
                         "check that the clip and the splats share one world")
    colour[seen] /= weight[seen, None]
    if not seen.all():
        logger.warning("%d of %d texels are seen by no frame; they take the nearest seen colour",
                       int((~seen).sum()), len(seen))
        from scipy.spatial import cKDTree

        _, nearest = cKDTree(points[seen]).query(points[~seen])
        colour[~seen] = colour[seen][nearest]
    texture = np.zeros((size, size, 3), np.float32)
    texture[inside] = colour
    texture = _dilate(texture, inside)
    return BakeResult(np.round(linear_to_srgb(texture) * 255).astype(np.uint8), float(seen.mean()))


def _rasterize_uv(faces: np.ndarray, uvs: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Which face covers each texel, and the texel centre's barycentrics in it.

    Coverage uses OpenCV's polygon fill (one call per face, conservative at edges); the
    barycentrics are hand-written (no library maps texels to barycentrics) and clamped, so
    edge texels take the nearest point of their face.  Returns face id (S, S) int32, -1 where
    no face lies, and (S, S, 3) float32 barycentrics.
    """
    import cv2

    # texel (i, j) has its centre at uv ((i + 0.5) / S, 1 - (j + 0.5) / S); cv2 puts centres
    # on integer coordinates
    xy = np.stack([uvs[:, 0] * size - 0.5, (1.0 - uvs[:, 1]) * size - 0.5], axis=1)  # [V, 2]
    fixed = np.round(xy * (1 << _UV_SUBPIXEL_BITS)).astype(np.int32)
    face_id = np.full((size, size), -1, np.int32)
    for k, tri in enumerate(faces):
        cv2.fillConvexPoly(face_id, fixed[tri], int(k), lineType=cv2.LINE_8, shift=_UV_SUBPIXEL_BITS)
    jj, ii = np.nonzero(face_id >= 0)
    f = face_id[jj, ii]
    a, bb, c = xy[faces[f, 0]], xy[faces[f, 1]], xy[faces[f, 2]]  # [P, 2] each
    p = np.stack([ii, jj], axis=1).astype(np.float64)
    v0, v1, v2 = bb - a, c - a, p - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    den = np.where(np.abs(den) < 1e-12, 1e-12, den)
    w1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
    w2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
    w = np.clip(np.stack([1.0 - w1 - w2, w1, w2], axis=1), 0.0, 1.0)
    w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-12)  # [P, 3]
    bary = np.zeros((size, size, 3), np.float32)
    bary[jj, ii] = w
    return face_id, bary


def _gather(vertices, faces, points, normals, clip: Clip, config: BakeConfig) -> tuple[np.ndarray, np.ndarray]:
    """Weighted sum of frame colours (linear light) over the views that see each point."""
    import cv2
    from scipy.ndimage import map_coordinates

    cams = clip.cameras
    diag = float(np.linalg.norm(vertices.max(0) - vertices.min(0)))
    tol = config.depth_tolerance * diag
    scale = max(int(config.visibility_scale), 1)
    zcams = cams.resized(cams.width * scale, cams.height * scale) if scale > 1 else cams
    # the mesh's own z-buffer per view: the depth test for visibility
    zbuf = render(MeshAsset(vertices, faces), zcams, RenderConfig(shading="unlit")).depth  # [T, sH, sW]
    colour = np.zeros((len(points), 3), np.float32)
    weight = np.zeros(len(points), np.float32)
    kernel = np.ones((2 * config.mask_erode_px + 1,) * 2, np.uint8)
    for t in range(len(cams)):
        uv, z = cams[t].project(points)  # [1, P, 2], [1, P]
        uv, z = uv[0], z[0]
        cos = (normals * _unit(cams.centres[t] - points)).sum(axis=1)
        ok = (z > 0) & (cos > config.min_cos)
        ok &= (uv[:, 0] >= 0) & (uv[:, 0] < cams.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cams.height)
        zi = np.clip((uv[:, 0] * scale).astype(np.int64), 0, zcams.width - 1)
        zj = np.clip((uv[:, 1] * scale).astype(np.int64), 0, zcams.height - 1)
        surface = zbuf[t, zj, zi]
        ok &= (surface > 0) & (z <= surface + tol)
        if clip.masks is not None:
            mask = clip.masks[t].astype(np.uint8)
            if config.mask_erode_px > 0:
                mask = cv2.erode(mask, kernel)
            ok &= mask[np.clip(uv[:, 1].astype(np.int64), 0, cams.height - 1),
                       np.clip(uv[:, 0].astype(np.int64), 0, cams.width - 1)] > 0
        if not ok.any():
            continue
        frame = srgb_to_linear(clip.frames[t].astype(np.float32) / 255.0)
        # scipy samples with pixel centres on integers; ours are at +0.5
        coords = np.stack([uv[ok, 1] - 0.5, uv[ok, 0] - 0.5])  # [2, p] (row, col)
        sample = np.stack([map_coordinates(frame[..., c], coords, order=1, mode="nearest") for c in range(3)], 1)
        w = cos[ok].astype(np.float32) ** config.angle_power
        colour[ok] += sample * w[:, None]
        weight[ok] += w
    return colour, weight


def _dilate(texture: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Fill every texel outside the charts with its nearest chart texel (seam dilation)."""
    from scipy.ndimage import distance_transform_edt

    _, (jj, ii) = distance_transform_edt(~inside, return_indices=True)
    return texture[jj, ii]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
