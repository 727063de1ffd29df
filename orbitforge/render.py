"""A CPU mesh renderer: textured, lit, with depth and mask, for any `Cameras`.

It feeds ground-truth orbits, the synthetic training world and previews, so throughput
matters.  Choice (measured by `bench/render.py` against trimesh/embree ray casting and Mesa
OpenGL through EGL): a z-buffer rasteriser compiled with numba, parallel over frames, then a
compiled shading pass parallel over rows.  Pure pip, no GL driver, bit-for-bit deterministic.

The reference path, `reference_render`, finds visibility by ray casting with trimesh (embree
when installed), independent of the rasteriser's projection, and shades in plain numpy
(`_shade`), independent of the compiled shader; a test comparing the two paths checks the
camera convention, the visibility and the shading at once.

Shading is Lambertian under a light fixed in the world plus ambient, in linear light: the
colour of a surface point is the same from every view, which is what multi-view
reconstruction assumes, so rendered orbits are exactly reconstructible.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Sequence

import numpy as np
from numba import njit, prange

from orbitforge.cameras import MAX_IMAGE_SIDE, Cameras
from orbitforge.errors import InputError
from orbitforge.mesh import MeshAsset

if TYPE_CHECKING:
    from orbitforge.clip import Clip

logger = logging.getLogger(__name__)

NEAR_Z = 1e-6
"""Triangles with a vertex closer than this (camera z) are skipped rather than clipped."""


@dataclass(frozen=True)
class RenderConfig:
    """How meshes are shaded.  Defaults suit training data: flat world light, white background."""

    shading: Literal["lit", "unlit"] = "lit"
    """"lit": Lambert + ambient under a world-fixed light; "unlit": the albedo as is."""
    light_dir: tuple[float, float, float] = (0.35, 1.0, 0.6)
    """Direction towards the light in world coordinates (+Y up); normalised internally."""
    ambient: float = 0.45
    """Share of light that reaches every surface regardless of orientation."""
    background: tuple[int, int, int] = (255, 255, 255)
    """sRGB colour of pixels no surface covers."""
    supersample: int = 1
    """Render at this factor and box-filter down: antialiased edges at supersample^2 the cost."""


@dataclass(frozen=True)
class RenderOutput:
    """Rendered frames.

    Attributes:
        rgb: (T, H, W, 3) uint8 sRGB.
        depth: (T, H, W) float32 camera z in world units; 0 where nothing is hit.
        mask: (T, H, W) bool, True where a surface covers the pixel centre.
    """

    rgb: np.ndarray
    depth: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class _Packed:
    """All parts flattened into arrays the kernels index by face."""

    vertices: np.ndarray  # [V, 3] float64
    faces: np.ndarray  # [F, 3] int64
    corner_uv: np.ndarray  # [F, 3, 2] float32
    corner_rgba: np.ndarray  # [F, 3, 4] float32 linear vertex colour x base factor
    corner_normal: np.ndarray  # [F, 3, 3] float32
    face_texture: np.ndarray  # [F] int32, -1 for none
    textures: tuple[np.ndarray, ...]  # each [h, w, 4] float32 linear RGBA


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float32)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055).astype(np.float32)


def _pack(parts: Sequence[MeshAsset]) -> _Packed:
    verts, faces, uvs, rgbas, normals, tex_ids, textures = [], [], [], [], [], [], []
    offset = 0
    for part in parts:
        f = part.faces.astype(np.int64)
        verts.append(part.vertices.astype(np.float64))
        faces.append(f + offset)
        offset += len(part.vertices)
        uv = part.uvs if part.uvs is not None else np.zeros((len(part.vertices), 2), np.float32)
        uvs.append(uv[f])
        factor = np.asarray(part.base_colour_factor, dtype=np.float32)
        factor = np.concatenate([srgb_to_linear(factor[:3]), factor[3:]])
        if part.vertex_colours is not None:
            vc = part.vertex_colours.astype(np.float32) / 255.0
            vc = np.concatenate([srgb_to_linear(vc[:, :3]), vc[:, 3:]], axis=1)
        else:
            vc = np.ones((len(part.vertices), 4), np.float32)
        rgbas.append((vc * factor)[f])
        normals.append(part.vertex_normals[f])
        if part.base_colour is not None:
            tex = part.base_colour.astype(np.float32) / 255.0
            if tex.shape[2] == 3:
                tex = np.concatenate([tex, np.ones_like(tex[..., :1])], axis=2)
            tex[..., :3] = srgb_to_linear(tex[..., :3])
            tex_ids.append(np.full(len(f), len(textures), np.int32))
            textures.append(tex)
        else:
            tex_ids.append(np.full(len(f), -1, np.int32))
    return _Packed(
        np.concatenate(verts), np.concatenate(faces), np.concatenate(uvs).astype(np.float32),
        np.concatenate(rgbas).astype(np.float32), np.concatenate(normals).astype(np.float32),
        np.concatenate(tex_ids), tuple(textures),
    )


@njit(parallel=True, cache=True)
def _rasterize(px, py, pz, faces, height, width):  # pragma: no cover - compiled
    """Z-buffer every frame.  px, py, pz: [T, V] screen x, y (pixel centres at +0.5) and camera
    z.  Returns face id [T, H, W] (-1 empty), perspective-correct barycentrics b0, b1
    [T, H, W] and depth [T, H, W] (inf empty).  Frames run in parallel; triangles in order."""
    T = px.shape[0]
    F = faces.shape[0]
    fid = np.full((T, height, width), -1, np.int32)
    bary0 = np.zeros((T, height, width), np.float32)
    bary1 = np.zeros((T, height, width), np.float32)
    depth = np.full((T, height, width), np.inf, np.float32)
    for t in prange(T):
        for f in range(F):
            i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
            z0, z1, z2 = pz[t, i0], pz[t, i1], pz[t, i2]
            if z0 < NEAR_Z or z1 < NEAR_Z or z2 < NEAR_Z:
                continue
            x0, x1, x2 = px[t, i0], px[t, i1], px[t, i2]
            y0, y1, y2 = py[t, i0], py[t, i1], py[t, i2]
            area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
            if abs(area) < 1e-12:
                continue
            # pixels whose centres (i + 0.5) fall inside the triangle's bounding box
            xmin = max(int(np.ceil(min(x0, x1, x2) - 0.5)), 0)
            xmax = min(int(np.floor(max(x0, x1, x2) - 0.5)), width - 1)
            ymin = max(int(np.ceil(min(y0, y1, y2) - 0.5)), 0)
            ymax = min(int(np.floor(max(y0, y1, y2) - 0.5)), height - 1)
            inv_area = 1.0 / area
            for j in range(ymin, ymax + 1):
                cy = j + 0.5
                for i in range(xmin, xmax + 1):
                    cx = i + 0.5
                    w0 = ((x1 - cx) * (y2 - cy) - (y1 - cy) * (x2 - cx)) * inv_area
                    w1 = ((x2 - cx) * (y0 - cy) - (y2 - cy) * (x0 - cx)) * inv_area
                    w2 = 1.0 - w0 - w1
                    if w0 < 0.0 or w1 < 0.0 or w2 < 0.0:
                        continue
                    inv_z = w0 / z0 + w1 / z1 + w2 / z2
                    z = 1.0 / inv_z
                    if z < depth[t, j, i]:
                        depth[t, j, i] = z
                        fid[t, j, i] = f
                        bary0[t, j, i] = w0 / z0 * z
                        bary1[t, j, i] = w1 / z1 * z
    return fid, bary0, bary1, depth


@njit(cache=True, inline="always")
def _srgb_encode(c):  # pragma: no cover - compiled
    c = min(max(c, 0.0), 1.0)
    return c * 12.92 if c <= 0.0031308 else 1.055 * c ** (1.0 / 2.4) - 0.055


@njit(parallel=True, cache=True)
def _shade_compiled(fid, bary0, bary1, corner_rgba, corner_uv, corner_normal, face_texture,
                    tex_flat, tex_offset, tex_h, tex_w, Kinv, rot, light, ambient, lit, background):  # pragma: no cover
    """The fast twin of `_shade`: same maths per pixel, compiled, parallel over image rows.
    tex_flat holds every texture as [h * w * 4] linear RGBA float32 starting at tex_offset[k]."""
    T, H, W = fid.shape
    rgb = np.empty((T, H, W, 3), np.uint8)
    for row in prange(T * H):
        t = row // H
        j = row % H
        for i in range(W):
            f = fid[t, j, i]
            if f < 0:
                rgb[t, j, i, 0], rgb[t, j, i, 1], rgb[t, j, i, 2] = background[0], background[1], background[2]
                continue
            w0, w1 = bary0[t, j, i], bary1[t, j, i]
            w2 = 1.0 - w0 - w1
            col = np.empty(3, np.float32)
            for c in range(3):
                col[c] = w0 * corner_rgba[f, 0, c] + w1 * corner_rgba[f, 1, c] + w2 * corner_rgba[f, 2, c]
            k = face_texture[f]
            if k >= 0:
                u = w0 * corner_uv[f, 0, 0] + w1 * corner_uv[f, 1, 0] + w2 * corner_uv[f, 2, 0]
                v = w0 * corner_uv[f, 0, 1] + w1 * corner_uv[f, 1, 1] + w2 * corner_uv[f, 2, 1]
                h, w, base = tex_h[k], tex_w[k], tex_offset[k]
                x = u * w - 0.5
                y = (1.0 - v) * h - 0.5
                x0, y0 = np.floor(x), np.floor(y)
                fx, fy = x - x0, y - y0
                xa, ya = int(x0) % w, int(y0) % h
                xb, yb = (xa + 1) % w, (ya + 1) % h
                for c in range(3):
                    top = tex_flat[base + (ya * w + xa) * 4 + c] * (1 - fx) + tex_flat[base + (ya * w + xb) * 4 + c] * fx
                    bot = tex_flat[base + (yb * w + xa) * 4 + c] * (1 - fx) + tex_flat[base + (yb * w + xb) * 4 + c] * fx
                    col[c] *= top * (1 - fy) + bot * fy
            if lit:
                n = np.empty(3, np.float32)
                for c in range(3):
                    n[c] = w0 * corner_normal[f, 0, c] + w1 * corner_normal[f, 1, c] + w2 * corner_normal[f, 2, c]
                norm = max(np.sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]), 1e-12)
                # view direction through the pixel centre, for the double-sided flip
                px, py = i + 0.5, j + 0.5
                dot_view = 0.0
                for r in range(3):
                    d_r = 0.0
                    for c in range(3):
                        d_r += rot[t, r, c] * (Kinv[t, c, 0] * px + Kinv[t, c, 1] * py + Kinv[t, c, 2])
                    dot_view += n[r] * d_r
                sign = -1.0 if dot_view > 0 else 1.0
                lambert = sign * (n[0] * light[0] + n[1] * light[1] + n[2] * light[2]) / norm
                lambert = min(max(lambert, 0.0), 1.0)
                shade = ambient + (1.0 - ambient) * lambert
                for c in range(3):
                    col[c] *= shade
            for c in range(3):
                rgb[t, j, i, c] = np.uint8(np.round(_srgb_encode(col[c]) * 255.0))
    return rgb


def _shade_fast(packed: _Packed, cameras: Cameras, config: RenderConfig, fid, bary0, bary1, depth) -> RenderOutput:
    """Compiled shading (see `_shade` for the readable reference it must match)."""
    textures = packed.textures or (np.zeros((1, 1, 4), np.float32),)
    sizes = np.array([t.shape[0] * t.shape[1] * 4 for t in textures], np.int64)
    light = np.asarray(config.light_dir, dtype=np.float64)
    rgb = _shade_compiled(
        fid, bary0, bary1, packed.corner_rgba, packed.corner_uv, packed.corner_normal, packed.face_texture,
        np.concatenate([t.reshape(-1) for t in textures]), np.concatenate([[0], np.cumsum(sizes)[:-1]]),
        np.array([t.shape[0] for t in textures], np.int64), np.array([t.shape[1] for t in textures], np.int64),
        np.linalg.inv(cameras.K), np.ascontiguousarray(cameras.c2w[:, :3, :3]), light / np.linalg.norm(light),
        float(config.ambient), config.shading == "lit", np.asarray(config.background, np.uint8),
    )
    mask = fid >= 0
    return RenderOutput(rgb=rgb, depth=np.where(mask, depth, 0).astype(np.float32), mask=mask)


def _sample_bilinear(tex: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup with repeat wrapping, glTF's default sampler.  uv: [P, 2] (v up)."""
    h, w = tex.shape[:2]
    x = uv[:, 0] * w - 0.5
    y = (1.0 - uv[:, 1]) * h - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    x0w, x1w, y0w, y1w = x0 % w, (x0 + 1) % w, y0 % h, (y0 + 1) % h
    top = tex[y0w, x0w] * (1 - fx) + tex[y0w, x1w] * fx
    bottom = tex[y1w, x0w] * (1 - fx) + tex[y1w, x1w] * fx
    return top * (1 - fy) + bottom * fy


def _shade(packed: _Packed, cameras: Cameras, config: RenderConfig, fid, bary0, bary1, depth) -> RenderOutput:
    """Reference shading in plain numpy: attributes at the visible surface -> RGB."""
    mask = fid >= 0
    f = fid[mask]
    b = np.stack([bary0[mask], bary1[mask], 1.0 - bary0[mask] - bary1[mask]], axis=1)[..., None]  # [P, 3, 1]
    albedo = (packed.corner_rgba[f] * b).sum(axis=1)  # [P, 4]
    uv = (packed.corner_uv[f] * b).sum(axis=1)
    tex_id = packed.face_texture[f]
    for k, tex in enumerate(packed.textures):
        sel = tex_id == k
        if sel.any():
            albedo[sel] *= _sample_bilinear(tex, uv[sel])
    colour = albedo[:, :3]
    if config.shading == "lit":
        normal = (packed.corner_normal[f] * b).sum(axis=1)
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
        # double-sided: a normal facing away from the camera is flipped
        dirs = _view_dirs(cameras, mask)
        flip = (normal * dirs).sum(axis=1) > 0
        normal[flip] *= -1
        light = np.asarray(config.light_dir, dtype=np.float32)
        light /= np.linalg.norm(light)
        lambert = np.clip(normal @ light, 0.0, 1.0)
        colour = colour * (config.ambient + (1.0 - config.ambient) * lambert)[:, None]
    rgb = np.empty(fid.shape + (3,), np.uint8)
    rgb[...] = np.asarray(config.background, np.uint8)
    rgb[mask] = np.round(linear_to_srgb(colour) * 255).astype(np.uint8)
    return RenderOutput(rgb=rgb, depth=np.where(mask, depth, 0).astype(np.float32), mask=mask)


def _view_dirs(cameras: Cameras, mask: np.ndarray) -> np.ndarray:
    """Unnormalised world view directions through the masked pixels' centres [P, 3]."""
    t, j, i = np.nonzero(mask)
    pix = np.stack([i + 0.5, j + 0.5, np.ones_like(i, dtype=np.float64)], axis=1)
    Kinv = np.linalg.inv(cameras.K)
    cam_dirs = np.einsum("pij,pj->pi", Kinv[t], pix)
    dirs = np.einsum("pij,pj->pi", cameras.c2w[t, :3, :3], cam_dirs)
    return dirs.astype(np.float32)


def _as_parts(meshes: MeshAsset | Sequence[MeshAsset]) -> tuple[MeshAsset, ...]:
    parts = (meshes,) if isinstance(meshes, MeshAsset) else tuple(meshes)
    if not parts:
        raise InputError("nothing to render: the asset has no mesh parts")
    return parts


def render(meshes: MeshAsset | Sequence[MeshAsset], cameras: Cameras, config: RenderConfig = RenderConfig()) -> RenderOutput:
    """Render meshes from every camera.

    Args:
        meshes: one MeshAsset or several parts, world +Y up.
        cameras: T cameras, OpenCV axes; distortion is not simulated.
        config: shading and background.
    Returns:
        RenderOutput with rgb (T, H, W, 3) uint8, depth (T, H, W) float32, mask (T, H, W) bool.

    Example:
        >>> from orbitforge import builtin, cameras
        >>> out = render(builtin.load("globe"), cameras.orbit(4, radius=3.0, width=64, height=64))
        >>> out.rgb.shape, out.mask.any()
        ((4, 64, 64, 3), True)
    """
    parts = _as_parts(meshes)
    if len(cameras) == 0:
        raise InputError("nothing to render: zero cameras (use at least 1 frame)")
    ss = int(config.supersample)
    if ss < 1:
        raise InputError(f"supersample must be >= 1, got {ss}")
    cams = cameras if ss == 1 else cameras.resized(cameras.width * ss, cameras.height * ss)
    packed = _pack(parts)
    uv, z = cams.project(packed.vertices)  # [T, V, 2], [T, V]
    fid, b0, b1, depth = _rasterize(
        np.ascontiguousarray(uv[..., 0]), np.ascontiguousarray(uv[..., 1]), np.ascontiguousarray(z),
        packed.faces, cams.height, cams.width,
    )
    out = _shade_fast(packed, cams, config, fid, b0, b1, depth)
    return out if ss == 1 else _downsample(out, ss, config.background)


def _downsample(out: RenderOutput, ss: int, background: tuple[int, int, int]) -> RenderOutput:
    """Box-filter a supersampled render: colour averaged, mask by majority, depth over hits."""
    T, H, W = out.mask.shape
    shape = (T, H // ss, ss, W // ss, ss)
    rgb = out.rgb.reshape(shape + (3,)).astype(np.float32).mean(axis=(2, 4))
    hits = out.mask.reshape(shape).sum(axis=(2, 4))
    depth_sum = out.depth.reshape(shape).sum(axis=(2, 4))
    mask = hits * 2 >= ss * ss
    depth = np.where(hits > 0, depth_sum / np.maximum(hits, 1), 0).astype(np.float32)
    return RenderOutput(np.round(rgb).astype(np.uint8), np.where(mask, depth, 0).astype(np.float32), mask)


def reference_render(meshes: MeshAsset | Sequence[MeshAsset], cameras: Cameras, config: RenderConfig = RenderConfig()) -> RenderOutput:
    """Slow, independent twin of `render`: visibility by casting one ray per pixel centre.

    Uses trimesh's ray casting (embree through `embreex` when installed).  It ignores
    `supersample`.  Meant for tests and benchmarks, not for production.
    """
    import trimesh

    parts = _as_parts(meshes)
    packed = _pack(parts)
    mesh = trimesh.Trimesh(packed.vertices, packed.faces, process=False)
    T, H, W = len(cameras), cameras.height, cameras.width
    fid = np.full((T, H, W), -1, np.int32)
    b0 = np.zeros((T, H, W), np.float32)
    b1 = np.zeros((T, H, W), np.float32)
    depth = np.zeros((T, H, W), np.float32)
    origins, dirs = cameras.rays()
    for t in range(T):
        o, d = origins[t].reshape(-1, 3).astype(np.float64), dirs[t].reshape(-1, 3).astype(np.float64)
        locs, ray_idx, tri_idx = mesh.ray.intersects_location(o, d, multiple_hits=False)
        if len(ray_idx) == 0:
            continue
        bary = trimesh.triangles.points_to_barycentric(mesh.triangles[tri_idx], locs)
        forward = cameras.c2w[t, :3, 2]
        fid[t].reshape(-1)[ray_idx] = tri_idx
        b0[t].reshape(-1)[ray_idx] = bary[:, 0]
        b1[t].reshape(-1)[ray_idx] = bary[:, 1]
        depth[t].reshape(-1)[ray_idx] = (locs - o[ray_idx]) @ forward
    return _shade(packed, cameras, config, fid, b0, b1, depth)


_CLIP_BYTES_PER_PIXEL = 8  # RGB uint8 + mask bool + depth float32, per frame pixel
MAX_CLIP_BYTES = 8 * 2**30
"""A clip is held in memory whole; beyond this an orbit is refused up front, not OOM-killed."""
_RENDER_BYTES_PER_PIXEL = 40  # rasteriser buffers plus shading output, per rendered pixel
_RENDER_BUDGET_BYTES = 512 * 2**20


@dataclass(frozen=True)
class OrbitConfig:
    """A ground-truth orbit around an asset: camera path plus renderer settings."""

    frames: int = 48
    """Number of views, evenly spaced over 360 degrees."""
    size: int = 256
    """Square image side in pixels."""
    elevation_deg: float = 20.0
    """Camera height above the asset's centre, as an angle."""
    fov_deg: float = 40.0
    """Vertical field of view."""
    radius: float | None = None
    """Camera distance; None frames the asset's bounding sphere with a margin."""
    start_azimuth_deg: float = 0.0
    """Azimuth of the first view; 0 looks at the asset's front (+Z)."""
    fps: float = 24.0
    """Playback rate of the clip's video."""
    render: RenderConfig = RenderConfig(supersample=2)
    """Shading; supersampled by default for antialiased frames."""

    def __post_init__(self) -> None:
        # fail before any work or any file is written
        from orbitforge.cameras import check_image_size, intrinsics_from_fov

        if self.frames < 1:
            raise InputError(f"an orbit needs at least 1 frame, got {self.frames}")
        check_image_size(self.size, self.size)
        rendered = self.size * self.render.supersample
        if rendered > MAX_IMAGE_SIDE:
            raise InputError(
                f"size {self.size} with supersample {self.render.supersample} renders {rendered} px per side, over "
                f"the {MAX_IMAGE_SIDE}-pixel limit; lower --supersample or --size"
            )
        intrinsics_from_fov(self.fov_deg, self.size, self.size)
        if not -90.0 < self.elevation_deg < 90.0:
            raise InputError(f"elevation must be in (-90, 90) degrees, got {self.elevation_deg}")
        if self.radius is not None and not self.radius > 0:
            raise InputError(f"orbit radius must be positive, got {self.radius}")
        if not self.fps > 0:
            raise InputError(f"fps must be positive, got {self.fps}")
        clip_bytes = self.frames * self.size * self.size * _CLIP_BYTES_PER_PIXEL
        if clip_bytes > MAX_CLIP_BYTES:
            raise InputError(
                f"{self.frames} frames at {self.size}x{self.size} need about {clip_bytes / 2**30:.0f} GiB in memory "
                f"(limit {MAX_CLIP_BYTES / 2**30:.0f} GiB); use fewer --frames or a smaller --size"
            )


def orbit_cameras_for(parts: Sequence[MeshAsset], config: OrbitConfig) -> Cameras:
    """The orbit of `config` around the parts' bounding-sphere centre."""
    from orbitforge.cameras import orbit, orbit_radius_to_fit
    from orbitforge.mesh import bounding_sphere

    centre, bound = bounding_sphere(parts)
    radius = config.radius or orbit_radius_to_fit(max(bound, 1e-9), config.fov_deg)
    return orbit(
        config.frames, radius=radius, elevation_deg=config.elevation_deg, fov_deg=config.fov_deg,
        width=config.size, height=config.size, target=centre, start_azimuth_deg=config.start_azimuth_deg,
    )


def render_orbit(parts: Sequence[MeshAsset], config: OrbitConfig = OrbitConfig(), *, source: str = "",
                 chunk: int = 8, progress=None) -> Clip:
    """Render a Clip with known cameras, masks and depth orbiting the asset.

    `progress`, when given, is called with the number of frames finished after each chunk.
    """
    from orbitforge.clip import Clip

    cams = orbit_cameras_for(_as_parts(parts), config)
    rendered_side = config.size * config.render.supersample
    chunk = max(1, min(chunk, _RENDER_BUDGET_BYTES // (rendered_side**2 * _RENDER_BYTES_PER_PIXEL)))
    outs = []
    for start in range(0, len(cams), chunk):
        outs.append(render(parts, cams[start : start + chunk], config.render))
        if progress is not None:
            progress(len(outs[-1].rgb))
    cat = lambda name: np.concatenate([getattr(o, name) for o in outs])  # noqa: E731
    return Clip(cat("rgb"), cams, cat("mask"), cat("depth"), fps=config.fps, source=source)
