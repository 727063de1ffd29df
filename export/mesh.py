"""Mesh from splats, a NeRF or silhouettes: a textured, game-ready triangle mesh and the clip.

    mesh_from_splats(scene, clip, MeshConfig(faces=20_000)) -> MeshAsset
    mesh_from_depths(depth, cameras, clip, MeshConfig())     -> MeshAsset   (any renderer's depth)
    mesh_from_silhouettes(clip, MeshConfig())                -> MeshAsset   (a visual hull)

`mesh_from_splats` does phases 1-2 and hands its depth maps to `mesh_from_depths` (3-7), which
the NeRF backend (`recon.nerf`) calls with nerfstudio's depth renders.

Phases (each a small function below):

1. Region of interest: the ball the clip's cameras look at, tightened to the box holding the
   opaque Gaussians; it sets the voxel size and the crop.
2. Depth renders: expected depth and alpha of the splats from the training cameras plus extra
   orbit views (above and below the training ring, so tops and undersides get fused too).
   Each Gaussian counts at its front (`front_sigmas` along the ray), not its centre, which
   sits inside the surface; depth is dropped where alpha is low (a blend with nothing) and
   where the surface is seen at a grazing angle (a pixel spans a long stretch of depth).
3. TSDF fusion with open3d's `VoxelBlockGrid` (the legacy `ScalableTSDFVolume` returns empty
   meshes in open3d 0.20.0), truncation a few voxels wide, then marching cubes.
4. Clean-up: crop to the region, keep the largest connected component (and any of comparable
   size), which removes floaters.
5. Quadric decimation to the face budget (fast-simplification).
6. UV atlas (xatlas) and base-colour bake from the input frames (`export.bake`).
7. Vertex normals (trimesh, area-weighted) carried across the atlas's seam splits.

`mesh_from_silhouettes` replaces phases 1-3 with a visual hull: every voxel is projected into
every frame and kept when it falls inside the object's silhouette in all views but
`hull_tolerance` of them.  It needs no depth at all, so it is the mesh source for clips whose
views do not quite agree (generated orbits): there TSDF fusion of splat depth carves away
whatever moves between views and leaves fragments, while silhouettes still overlap.  A hull
cannot see concavities (a mug's inside is filled); the splat and NeRF paths can.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from orbitforge.cameras import Cameras, orbit
from orbitforge.clip import Clip, backdrop_colour
from orbitforge.errors import InputError
from orbitforge.export.bake import BakeConfig, bake_base_colour
from orbitforge.gaussians import GaussianScene
from orbitforge.mesh import MeshAsset

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""progress(phase, done, total): phase is one of the names in `PHASES`."""

PHASES = ("render", "fuse", "carve", "clean", "decimate", "atlas", "bake")


@dataclass(frozen=True)
class MeshConfig:
    """Settings of `mesh_from_splats`; each default is stated here only."""

    faces: int = 20_000
    """Target triangle count after decimation (a mesh already under it is kept as is)."""
    texture_size: int = 1024
    """Side of the square base-colour texture in texels."""
    voxel_resolution: int = 192
    """Voxels across the diagonal of the region of interest: the voxel size.  Finer keeps
    thinner parts at cubic cost in memory and time."""
    voxel_size: float | None = None
    """Voxel edge in world units; overrides `voxel_resolution` when given."""
    truncation_voxels: float = 4.0
    """TSDF truncation distance in voxels.  Wide enough to span the splats' depth noise, narrow
    enough that thin parts' front and back do not cancel."""
    weight_threshold: float = 3.0
    """Marching cubes keeps voxels observed by at least this many depth maps: 1 keeps surfaces
    seen once (noisy), higher needs more views."""
    alpha_threshold: float = 0.5
    """Depth is used only where the splats' accumulated opacity reaches this."""
    front_sigmas: float = 2.0
    """Each Gaussian's depth is taken this many standard deviations (along the view ray) in front
    of its centre.  Splats are blobs whose centres sit inside the surface; their front is where
    the object begins, so 0 (plain expected depth) shrinks the mesh by about a Gaussian's
    thickness, most for under-trained, fat Gaussians, hardly at all for thin converged ones."""
    min_view_cos: float = 0.25
    """Depth pixels whose surface (normal from the depth map's gradient) is seen more grazing
    than this cosine are dropped: there one pixel spans a long stretch of depth, which TSDF
    fusion (one weight per observation) would smear into a noisy surface."""
    render_size: int = 256
    """Longer side in pixels of the splat depth renders; intrinsics are scaled to it."""
    extra_views: int = 12
    """Views per extra orbit ring (0: the training cameras only)."""
    extra_elevations_deg: tuple[float, ...] = (-30.0, 55.0)
    """Elevations of the extra orbit rings, around the region's centre at the cameras' median
    distance, with their mean field of view."""
    keep_component_ratio: float = 0.2
    """Connected components with fewer faces than this share of the largest are floaters and
    removed (1.0 keeps only the largest)."""
    crop: bool = True
    """Cut away surface outside the region of interest (padded by `roi_margin`)."""
    roi_margin: float = 0.1
    """Padding of the region of interest, as a share of its diagonal."""
    hull_tolerance: int = 1
    """Visual hull only: views whose silhouette may leave a voxel out before it is carved away.
    0 is the strict hull; 1 forgives one view that disagrees (a generated frame whose handle
    drifted, a blurred mask edge)."""
    foreground_threshold: float = 0.1
    """Visual hull of a clip without masks: a pixel is foreground when its colour differs from the
    backdrop (the median of the frame borders) by more than this (RGB in 0-1, Euclidean)."""
    bake: BakeConfig = field(default_factory=BakeConfig)
    """Texture baking settings; its `size` is replaced by `texture_size`."""

    def __post_init__(self) -> None:
        if self.faces < 4:
            raise InputError(f"MeshConfig.faces must be at least 4, got {self.faces}")
        if not 8 <= self.texture_size <= 16384:
            raise InputError(f"MeshConfig.texture_size must be in 8..16384 texels, got {self.texture_size}")
        if self.voxel_resolution < 8:
            raise InputError(f"MeshConfig.voxel_resolution must be at least 8, got {self.voxel_resolution}")
        if self.voxel_size is not None and not self.voxel_size > 0:
            raise InputError(f"MeshConfig.voxel_size must be positive, got {self.voxel_size}")
        if not 0.0 < self.alpha_threshold < 1.0:
            raise InputError(f"MeshConfig.alpha_threshold must be in (0, 1), got {self.alpha_threshold}")
        if not 0.0 < self.keep_component_ratio <= 1.0:
            raise InputError(f"MeshConfig.keep_component_ratio must be in (0, 1], got {self.keep_component_ratio}")
        if self.hull_tolerance < 0:
            raise InputError(f"MeshConfig.hull_tolerance must be 0 or more, got {self.hull_tolerance}")
        if not 0.0 < self.foreground_threshold < 1.0:
            raise InputError(f"MeshConfig.foreground_threshold must be in (0, 1), got {self.foreground_threshold}")


@dataclass(frozen=True)
class _Region:
    """Axis-aligned box around the object, world units."""

    lo: np.ndarray  # [3]
    hi: np.ndarray  # [3]

    @property
    def centre(self) -> np.ndarray:
        return (self.lo + self.hi) / 2

    @property
    def diagonal(self) -> float:
        return float(np.linalg.norm(self.hi - self.lo))


def mesh_from_splats(scene: GaussianScene, clip: Clip, config: MeshConfig = MeshConfig(), *,
                     progress: Progress | None = None) -> MeshAsset:
    """Extract a textured triangle mesh from trained splats.

    Args:
        scene: the trained Gaussians (N > 0), in the clip's world (+Y up).
        clip: the posed clip they were trained on: frames (T, H, W, 3) uint8 sRGB, cameras
            (OpenCV axes, camera-to-world), optional masks.  The texture is baked from these
            frames, not from splat renders.
        config: see `MeshConfig`.
        progress: called as progress(phase, done, total) while working; phases in `PHASES`.

    Returns:
        One MeshAsset: vertices (V, 3) float32 in the clip's world and units (the run records
        the scale from them to metres), +Y up; faces
        (F, 3) int32 CCW seen from outside, F <= config.faces; unit vertex normals; UVs (V, 2);
        base_colour (texture_size, texture_size, 3) uint8 sRGB.

    Raises:
        InputError: no Gaussians, no cameras, or nothing opaque to fuse (one line with a hint).
    """
    report = progress or (lambda phase, done, total: None)
    _check_inputs(scene, clip)
    # 1. region of interest and voxel size
    region = _region_of_interest(scene, clip.cameras)
    # 2. splat depth renders from the training cameras plus extra orbit rings
    cams = fusion_cameras(clip.cameras, region.centre, config)
    # one torch thread: the CPU rasteriser's numba kernels carry the parallelism (as in the trainer)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        depth = _render_depths(scene, cams, config, report)  # [C, h, w]
    finally:
        torch.set_num_threads(threads)
    return mesh_from_depths(depth, cams, clip, config, region=region, progress=progress)


def mesh_from_depths(depth: np.ndarray, cams: Cameras, clip: Clip, config: MeshConfig = MeshConfig(), *,
                     region: _Region | None = None, progress: Progress | None = None) -> MeshAsset:
    """Phases 3-7 over depth maps from any renderer: splats here, a NeRF through `recon.nerf`.

    Args:
        depth: (C, h, w) float camera-z depth in the clip's world units, 0 where there is no
            surface (already masked: see `depth_from_ray_distance`).
        cams: the C cameras the depth maps were rendered from (h x w).
        clip: the posed clip the texture is baked from.
        region: the box around the object; by default the 1st-99th percentiles of the
            back-projected depth inside the ball the clip's cameras frame.
    """
    report = progress or (lambda phase, done, total: None)
    if clip.cameras is None:
        raise InputError("meshing needs the clip's cameras: run `orbitforge poses` first")
    if not (depth > 0).any():
        raise InputError("every depth map is empty: nothing to mesh; train longer or lower MeshConfig.alpha_threshold")
    region = region or _region_of_depths(depth, cams, clip.cameras)
    voxel = config.voxel_size or region.diagonal / config.voxel_resolution
    # 3. TSDF fusion and marching cubes
    report("fuse", 0, 1)
    vertices, faces = _fuse(depth, cams, voxel, region, config)
    report("fuse", 1, 1)
    return _finish(vertices, faces, clip, config, region, voxel, report)


def _finish(vertices: np.ndarray, faces: np.ndarray, clip: Clip, config: MeshConfig, region: _Region, voxel: float,
            report: Progress) -> MeshAsset:
    """Phases 4-7 over any closed surface in the clip's world: clean, decimate, atlas, bake."""
    # 4. crop, largest component(s)
    vertices, faces = _clean(vertices, faces, region, config)
    report("clean", 1, 1)
    # 5. decimate to the face budget
    vertices, faces = _decimate(vertices, faces, config.faces)
    report("decimate", 1, 1)
    # 6. UV atlas, normals carried over the seam splits, and the bake
    normals = _vertex_normals(vertices, faces)
    vmap, faces, uvs = _atlas(vertices, faces, normals, config.texture_size)
    vertices, normals = vertices[vmap], normals[vmap]
    report("atlas", 1, 1)
    baked = bake_base_colour(vertices, faces, uvs, normals, clip, replace(config.bake, size=config.texture_size))
    report("bake", 1, 1)
    logger.info("mesh: %d vertices, %d faces, voxel %.3g, %.0f%% of texels seen", len(vertices), len(faces),
                voxel, 100 * baked.seen_fraction)
    return MeshAsset(vertices=vertices, faces=faces, normals=normals, uvs=uvs, base_colour=baked.texture,
                     name="mesh", units="m", up_axis="+Y")


def mesh_from_silhouettes(clip: Clip, config: MeshConfig = MeshConfig(), *,
                          progress: Progress | None = None) -> MeshAsset:
    """A textured visual hull of the object in a posed clip: no splats, no depth.

    Args:
        clip: frames with cameras; its masks when it has them, else the pixels that differ from
            the backdrop (`foreground_masks`).
        config: `voxel_resolution`, `hull_tolerance` and `foreground_threshold` shape the hull;
            phases 4-7 as for the other sources.
    """
    report = progress or (lambda phase, done, total: None)
    masks = _silhouettes(clip, config)
    report("carve", 0, 1)
    vertices, faces, voxel = _carve(clip.cameras, masks, config)
    report("carve", 1, 1)
    if clip.masks is None:  # the bake samples only inside the silhouettes, not the backdrop around them
        clip = Clip(clip.frames, clip.cameras, masks, fps=clip.fps, source=clip.source)
    region = _Region(vertices.min(axis=0), vertices.max(axis=0))
    return _finish(vertices, faces, clip, replace(config, crop=False), region, voxel, report)


def visual_hull(clip: Clip, config: MeshConfig = MeshConfig()) -> tuple[np.ndarray, np.ndarray]:
    """The untextured visual hull of a posed clip: (V, 3) vertices and (F, 3) faces, CCW seen
    from outside, closed; `mesh_from_silhouettes` without clean-up, decimation and texture."""
    vertices, faces, _ = _carve(clip.cameras, _silhouettes(clip, config), config)
    return vertices, faces


def _silhouettes(clip: Clip, config: MeshConfig) -> np.ndarray:
    """The clip's object masks, or `foreground_masks` when it has none; it must have cameras."""
    if clip.cameras is None:
        raise InputError("a mesh from silhouettes needs the clip's cameras: run `orbitforge poses` first")
    return clip.masks if clip.masks is not None else foreground_masks(clip, config.foreground_threshold)


def _carve(cameras: Cameras, masks: np.ndarray, config: MeshConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """Marching cubes over the hull field: a coarse pass over the ball the cameras frame finds the
    hull's box, a fine pass at `voxel_resolution` fills it.  Returns vertices, faces, voxel."""
    if not masks.any():
        raise InputError("no frame shows an object against its backdrop: nothing to carve; lower "
                         "MeshConfig.foreground_threshold or give the clip masks")
    tolerance = min(config.hull_tolerance, max(len(masks) - 2, 0))  # at least two views must agree
    sdf = np.stack([_silhouette_distance(m) for m in masks])  # [T, H, W], pixels, < 0 inside
    centre, ball = _framed_ball(cameras)
    step = 2 * math.sqrt(3) * ball / 48
    field, lo = _hull_field(sdf, cameras, _Region(centre - ball, centre + ball), step, tolerance)
    inside = np.argwhere(field < 0)
    if len(inside) == 0:
        raise InputError("the silhouettes share no volume: the clip's cameras do not agree with its frames; "
                         "raise MeshConfig.hull_tolerance or check the poses")
    region = _Region(lo + (inside.min(axis=0) - 1) * step, lo + (inside.max(axis=0) + 1) * step)
    voxel = config.voxel_size or region.diagonal / config.voxel_resolution
    field, lo = _hull_field(sdf, cameras, region, voxel, tolerance)
    vertices, faces = _surface(field, lo, voxel)
    return vertices, faces, voxel


def foreground_masks(clip: Clip, threshold: float = 0.1) -> np.ndarray:
    """(T, H, W) bool: pixels whose colour differs from the backdrop by more than `threshold`.

    The backdrop is the median colour of each frame's one-pixel border (generated orbits and
    rendered clips sit on a plain one).  Holes inside the object (a white stripe on a white
    backdrop) are filled; specks of a few pixels are dropped.
    """
    from scipy import ndimage

    out = np.zeros(clip.frames.shape[:3], bool)
    for t, frame in enumerate(clip.frames):
        mask = np.linalg.norm(frame / 255.0 - backdrop_colour(frame), axis=-1) > threshold
        mask = ndimage.binary_opening(mask, iterations=1)
        out[t] = ndimage.binary_fill_holes(mask)
    return out


def _silhouette_distance(mask: np.ndarray) -> np.ndarray:
    """Signed distance in pixels to the silhouette's edge: negative inside, positive outside.
    The edge lies half-way between an inside and an outside pixel centre."""
    from scipy import ndimage

    if not mask.any():
        return np.full(mask.shape, np.inf, np.float32)
    outside = ndimage.distance_transform_edt(~mask)
    inside = ndimage.distance_transform_edt(mask)
    return np.where(mask, 0.5 - inside, outside - 0.5).astype(np.float32)


_OUTSIDE = np.float32(1e3)
"""Silhouette distance (pixels) of a point no view can place inside: far outside."""


def _hull_field(sdf: np.ndarray, cams: Cameras, region: _Region, voxel: float, tolerance: int):
    """Per voxel corner of `region`, the silhouette distance (pixels) that decides it: the
    (tolerance + 1)-th largest over the views, < 0 inside the hull.  A point outside a frame counts
    as outside that view's silhouette: an orbit keeps its object in frame, and without that rule
    the corners of the box that only two views see would survive as floaters.

    Hand-written: no library carves a visual hull from calibrated silhouettes.
    Returns the field [X, Y, Z] and the world position of its first corner.
    """
    from scipy.ndimage import map_coordinates

    shape = np.maximum(np.ceil((region.hi - region.lo) / voxel).astype(int) + 1, 2)
    axes = [region.lo[i] + voxel * np.arange(shape[i]) for i in range(3)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    top = np.full((tolerance + 1, len(points)), -np.inf, np.float32)  # the largest distances so far
    h, w = sdf.shape[1:]
    for t in range(len(cams)):
        uv, z = cams[[t]].project(points)
        u, v = uv[0, :, 0] - 0.5, uv[0, :, 1] - 0.5  # pixel-centre coordinates to array indices
        ok = (z[0] > 0) & (u >= -0.5) & (u <= w - 0.5) & (v >= -0.5) & (v <= h - 0.5)
        d = np.full(len(points), _OUTSIDE, np.float32)
        d[ok] = map_coordinates(sdf[t], [v[ok], u[ok]], order=1, mode="nearest")
        top = np.sort(np.concatenate([top, np.minimum(d, _OUTSIDE)[None]]), axis=0)[-(tolerance + 1):]
    return top[0].reshape(shape), region.lo


def _surface(field: np.ndarray, origin: np.ndarray, voxel: float) -> tuple[np.ndarray, np.ndarray]:
    """The zero level set of a field that is negative inside (scikit-image's marching cubes),
    as world vertices and faces wound counter-clockwise seen from outside."""
    from skimage.measure import marching_cubes

    # pad with outside so that a hull touching the box is still closed
    padded = np.pad(field, 1, constant_values=_OUTSIDE)
    verts, faces, _, _ = marching_cubes(padded, level=0.0)
    if len(faces) == 0:
        raise InputError("the visual hull is empty: the silhouettes share no volume")
    # with the default gradient_direction ("descent") the triangles wind counter-clockwise seen
    # from the higher values, here outside; tests/test_export_mesh.py checks the signed volume
    return origin + (verts - 1) * voxel, faces.astype(np.int64)


def depth_from_ray_distance(distance: np.ndarray, accumulation: np.ndarray, cams: Cameras,
                            config: MeshConfig = MeshConfig()) -> np.ndarray:
    """Camera-z depth maps ready for `mesh_from_depths` from a volume renderer's output.

    NeRFs report the expected distance along each unit-length ray and the accumulated opacity;
    fusion wants z, and only where the ray really hit something (`alpha_threshold`) at an angle
    that is not grazing (`min_view_cos`).  distance, accumulation: (C, h, w).
    """
    z = distance / np.linalg.norm(_pixel_rays(cams.K, *distance.shape[1:]), axis=-1)
    ok = np.isfinite(z) & (accumulation >= config.alpha_threshold)
    return _drop_grazing(np.where(ok, z, 0.0).astype(np.float32), cams.K, config.min_view_cos)


def _check_inputs(scene: GaussianScene, clip: Clip) -> None:
    if scene.num_gaussians == 0:
        raise InputError("the splat scene has no Gaussians; train splats first (`orbitforge splat RUN`) "
                         "and check that the PLY is not empty")
    if clip.cameras is None:
        raise InputError("meshing needs the clip's cameras: run `orbitforge poses` first")


def _framed_ball(cameras: Cameras) -> tuple[np.ndarray, float]:
    """(centre, radius) of the ball the cameras frame: the point nearest every optical axis and
    half the view's height at the median distance, with 50% to spare."""
    from orbitforge.recon.normalise import look_at_centre

    centre = look_at_centre(cameras)
    distance = float(np.median(np.linalg.norm(cameras.centres - centre, axis=1)))
    return centre, distance * float(np.tan(np.radians(cameras.fov_y_deg.max()) / 2)) * 1.5


def _region_of_interest(scene: GaussianScene, cameras: Cameras) -> _Region:
    """The box of the opaque Gaussians inside the ball the cameras frame.

    The ball (the point nearest every optical axis, radius from the median distance and field
    of view) alone is loose; the Gaussians alone include floaters far away.  1st-99th
    percentiles of the opaque ones inside the ball, padded by 3 sigma of their size, do both.
    """
    centre, ball = _framed_ball(cameras)
    means = scene.means.detach().cpu().double().numpy()
    opacity = scene.opacities.detach().cpu().numpy()
    sigma = scene.scales.detach().cpu().numpy().max(axis=1)
    keep = (np.linalg.norm(means - centre, axis=1) < ball) & (opacity > 0.5)
    if keep.sum() < 16:
        keep = np.linalg.norm(means - centre, axis=1) < ball
    if keep.sum() < 16:
        return _Region(centre - ball, centre + ball)
    pts = means[keep]
    pad = 3 * float(np.median(sigma[keep]))
    lo, hi = np.percentile(pts, 1, axis=0) - pad, np.percentile(pts, 99, axis=0) + pad
    return _Region(lo, hi)


def _region_of_depths(depth: np.ndarray, cams: Cameras, clip_cameras: Cameras) -> _Region:
    """The box of the back-projected depth inside the ball the clip's cameras frame (1st-99th
    percentiles, so stray far pixels do not stretch it)."""
    centre, ball = _framed_ball(clip_cameras)
    rays = _pixel_rays(cams.K, *depth.shape[1:])  # [c, h, w, 3]
    t, v, u = np.nonzero(depth > 0)
    xyz = rays[t, v, u] * depth[t, v, u, None]  # camera space
    pts = np.einsum("nij,nj->ni", cams.c2w[t, :3, :3], xyz) + cams.c2w[t, :3, 3]
    pts = pts[np.linalg.norm(pts - centre, axis=1) < ball]
    if len(pts) < 16:
        return _Region(centre - ball, centre + ball)
    return _Region(np.percentile(pts, 1, axis=0), np.percentile(pts, 99, axis=0))


def fusion_cameras(cameras: Cameras, centre: np.ndarray, config: MeshConfig) -> Cameras:
    """The views fused into the mesh: the training cameras plus `extra_views` per extra ring
    around `centre`, all resized to `render_size`."""
    scale = config.render_size / max(cameras.width, cameras.height)
    width, height = max(round(cameras.width * scale), 1), max(round(cameras.height * scale), 1)
    cams = cameras.resized(width, height)
    if config.extra_views <= 0 or not config.extra_elevations_deg:
        return cams
    distance = float(np.median(np.linalg.norm(cameras.centres - centre, axis=1)))
    fov = float(np.mean(cams.fov_y_deg))
    rings = [orbit(config.extra_views, radius=distance, elevation_deg=e, fov_deg=fov, width=width, height=height,
                   target=centre, start_azimuth_deg=180.0 / config.extra_views)
             for e in config.extra_elevations_deg]
    return Cameras(np.concatenate([cams.K] + [r.K for r in rings]),
                   np.concatenate([cams.c2w] + [r.c2w for r in rings]), width, height)


@torch.no_grad()
def _render_depths(scene: GaussianScene, cams: Cameras, config: MeshConfig, report: Progress) -> np.ndarray:
    """Expected camera-z depth of the splats' fronts per view, 0 where alpha is low.  [C, h, w]

    One view per rasteriser call: the means are slid towards each camera along its rays by
    `front_sigmas` standard deviations, which moves their depth and keeps their image position.
    """
    from orbitforge.recon.splat.render import render_splats

    params = scene.render_params()
    device = params["means"].device
    w2c = torch.tensor(cams.w2c, dtype=torch.float32, device=device)
    Ks = torch.tensor(cams.K, dtype=torch.float32, device=device)
    inv_cov = _inverse_covariances(params["scales"], params["quats"])  # [N, 3, 3]
    means = params["means"]
    out, max_alpha = [], 0.0
    for t in range(len(cams)):
        ray = torch.nn.functional.normalize(means - torch.tensor(cams.centres[t], dtype=torch.float32,
                                                                 device=device), dim=-1)  # [N, 3]
        sigma_along = torch.rsqrt(torch.einsum("ni,nij,nj->n", ray, inv_cov, ray).clamp_min(1e-20))  # [N]
        moved = {**params, "means": means - config.front_sigmas * sigma_along[:, None] * ray}
        r = render_splats(moved, w2c[t : t + 1], Ks[t : t + 1], cams.width, cams.height, sh_degree=0)
        alpha, depth = r.alpha[0, ..., 0].cpu().numpy(), r.depth[0, ..., 0].cpu().numpy()  # [h, w]
        max_alpha = max(max_alpha, float(alpha.max(initial=0.0)))
        depth = np.where(alpha >= config.alpha_threshold, depth, 0.0).astype(np.float32)
        out.append(_drop_grazing(depth[None], cams.K[t : t + 1], config.min_view_cos)[0])
        report("render", t + 1, len(cams))
    depth = np.stack(out)
    if not (depth > 0).any():
        raise InputError(f"the splats render transparent from every camera (max alpha {max_alpha:.2f} < "
                         f"alpha_threshold {config.alpha_threshold}): nothing to mesh; check that the clip's "
                         "cameras are the ones the splats were trained with, or train longer")
    return depth


def _inverse_covariances(log_scales: torch.Tensor, quats_wxyz: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) inverse covariances R diag(1 / s^2) R^T of the Gaussians."""
    from orbitforge.recon.splat.projection import quat_to_rotmat

    R = quat_to_rotmat(quats_wxyz)  # [N, 3, 3]
    return (R * torch.exp(-2 * log_scales)[:, None, :]) @ R.transpose(1, 2)


def _pixel_rays(Ks: np.ndarray, h: int, w: int) -> np.ndarray:
    """(c, h, w, 3) camera-space rays (x, y, 1) through the pixel centres of c pinhole cameras:
    a point at camera depth z on pixel (v, u) is z * rays[:, v, u]."""
    j, i = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    x = (i[None] - Ks[:, 0, 2, None, None]) / Ks[:, 0, 0, None, None]  # [c, h, w]
    y = (j[None] - Ks[:, 1, 2, None, None]) / Ks[:, 1, 1, None, None]
    return np.stack([x, y, np.ones_like(x)], axis=-1)


def _drop_grazing(depth: np.ndarray, Ks: np.ndarray, min_cos: float) -> np.ndarray:
    """Zero the depth pixels seen at a grazing angle or next to a hole.  depth [c, h, w].

    Hand-written (no library does this on plain depth maps): camera-space points from depth,
    the normal from the cross product of their central differences, and its cosine with the
    pixel's ray.  Depth edges have huge differences, so they count as grazing too.
    """
    rays = _pixel_rays(Ks, *depth.shape[1:])  # [c, h, w, 3]
    points = rays * depth[..., None]
    du = np.gradient(points, axis=2)
    dv = np.gradient(points, axis=1)
    normal = np.cross(du, dv)
    norms = np.linalg.norm(normal, axis=-1) * np.linalg.norm(rays, axis=-1)
    cos = np.abs((normal * rays).sum(-1)) / np.maximum(norms, 1e-12)
    valid = depth > 0
    # a pixel whose neighbour is a hole has no trustworthy gradient
    from scipy.ndimage import binary_erosion

    valid &= binary_erosion(valid, structure=np.ones((1, 3, 3), bool))
    return np.where(valid & (cos >= min_cos), depth, 0.0).astype(np.float32)


def _fuse(depth: np.ndarray, cams: Cameras, voxel: float, region: _Region, config: MeshConfig):
    """TSDF-fuse the depth maps and extract the zero level set.  Returns (V, 3), (F, 3) CCW."""
    import open3d as o3d
    import open3d.core as o3c

    cpu = o3c.Device("CPU:0")
    block = 8
    extent = (region.hi - region.lo) * (1 + 2 * config.roi_margin) + 2 * config.truncation_voxels * voxel
    blocks = int(np.prod(np.ceil(extent / (block * voxel)) + 2))  # the whole box: an upper bound
    # the integrate kernel reads a colour attribute unconditionally, so one is declared
    grid = o3d.t.geometry.VoxelBlockGrid(attr_names=("tsdf", "weight", "color"),
                                         attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
                                         attr_channels=((1,), (1,), (3,)), voxel_size=float(voxel),
                                         block_resolution=block, block_count=blocks, device=cpu)
    far = float(np.linalg.norm(cams.centres - region.centre, axis=1).max() + region.diagonal)
    w2c = cams.w2c
    for t in range(len(cams)):
        if not (depth[t] > 0).any():
            continue
        # open3d maps a projected u to pixel int(u), so pixel i covers [i, i+1): our convention
        image = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(depth[t]), device=cpu))
        K = o3c.Tensor(cams.K[t], o3c.float64)
        E = o3c.Tensor(w2c[t], o3c.float64)
        coords = grid.compute_unique_block_coordinates(image, K, E, depth_scale=1.0, depth_max=far,
                                                       trunc_voxel_multiplier=config.truncation_voxels)
        grid.integrate(coords, image, K, E, depth_scale=1.0, depth_max=far,
                       trunc_voxel_multiplier=config.truncation_voxels)
    mesh = grid.extract_triangle_mesh(weight_threshold=config.weight_threshold)
    vertices = mesh.vertex.positions.numpy().astype(np.float64) if "positions" in mesh.vertex else np.zeros((0, 3))
    faces = mesh.triangle.indices.numpy().astype(np.int64) if "indices" in mesh.triangle else np.zeros((0, 3), int)
    if len(faces) == 0:
        raise InputError("TSDF fusion of the splat depth produced no surface: the depth maps disagree or too few "
                         f"views see each voxel (weight_threshold {config.weight_threshold}); lower "
                         "MeshConfig.weight_threshold or alpha_threshold, or train the splats longer")
    # open3d's marching cubes winds triangles counter-clockwise seen from outside (positive
    # TSDF), as orbitforge and glTF want; tests/test_export_mesh.py checks the signed volume
    return vertices, faces


def _clean(vertices: np.ndarray, faces: np.ndarray, region: _Region, config: MeshConfig):
    """Crop to the padded region, then drop components much smaller than the largest."""
    import trimesh

    mesh = trimesh.Trimesh(vertices, faces, process=True)  # merges marching cubes' duplicate vertices
    if config.crop:
        pad = config.roi_margin * region.diagonal
        inside = np.all((mesh.vertices >= region.lo - pad) & (mesh.vertices <= region.hi + pad), axis=1)
        keep = inside[mesh.faces].all(axis=1)
        if keep.any() and not keep.all():
            logger.info("cropped %d of %d faces outside the region of interest", int((~keep).sum()), len(keep))
            mesh.update_faces(keep)
            mesh.remove_unreferenced_vertices()
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
    counts = np.bincount(labels)
    big = counts >= config.keep_component_ratio * counts.max()
    if not big.all():
        logger.warning("removed %d floating component(s), %d faces", int((~big).sum()), int(counts[~big].sum()))
        mesh.update_faces(big[labels])
        mesh.remove_unreferenced_vertices()
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


def _decimate(vertices: np.ndarray, faces: np.ndarray, target: int):
    """Quadric decimation (fast-simplification) to at most `target` faces."""
    import fast_simplification
    import trimesh

    if len(faces) <= target:
        return vertices, faces
    v, f = fast_simplification.simplify(vertices.astype(np.float32), faces.astype(np.int32),
                                        target_reduction=1.0 - target / len(faces))
    if len(f) > target:  # the simplifier may stop a little short of the ratio
        v, f = fast_simplification.simplify(v, f, target_reduction=1.0 - (target - 1) / len(f))
    # collapsed edges leave degenerate faces and unreferenced vertices (whose normals would be 0)
    mesh = trimesh.Trimesh(np.asarray(v, np.float64), np.asarray(f, np.int64), process=False)
    mesh.update_faces(mesh.nondegenerate_faces() & (mesh.area_faces > 1e-12 * mesh.scale**2))
    mesh.remove_unreferenced_vertices()
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) area-weighted unit vertex normals (trimesh)."""
    import trimesh

    normals = np.array(trimesh.Trimesh(vertices, faces, process=False).vertex_normals, np.float64)
    # a vertex whose faces' normals cancel (a pinched fold) has none: point it away from the centre
    flat = np.linalg.norm(normals, axis=1) < 0.5
    if flat.any():
        away = vertices[flat] - vertices.mean(axis=0)
        normals[flat] = away / np.maximum(np.linalg.norm(away, axis=1, keepdims=True), 1e-12)
    return normals


def _atlas(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, texture_size: int):
    """xatlas charts packed into a `texture_size` square with a few texels of padding.

    Returns vmapping (V',) into the input vertices, faces (F, 3) over the new vertices and uvs
    (V', 2) float32 in [0, 1].  The bake writes texels in orbitforge's v-up convention for
    exactly these uvs, so the atlas's own orientation needs no flip.
    """
    import xatlas

    # xatlas sizes charts in absolute units; a centimetre-sized asset otherwise packs into a
    # corner of the texture.  UVs do not change with a uniform scale, so work at unit size
    unit = (vertices - vertices.mean(axis=0)) / max(float(np.ptp(vertices, axis=0).max()), 1e-12)
    atlas = xatlas.Atlas()
    atlas.add_mesh(unit.astype(np.float32), faces.astype(np.uint32), normals.astype(np.float32))
    pack = xatlas.PackOptions()
    pack.resolution = int(texture_size)
    pack.padding = max(2, texture_size // 256)
    pack.bilinear = True
    atlas.generate(xatlas.ChartOptions(), pack)
    vmap, indices, uvs = atlas[0]
    return np.asarray(vmap, np.int64), np.asarray(indices, np.int64), np.asarray(uvs, np.float32)
