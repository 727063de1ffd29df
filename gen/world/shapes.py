"""Mesh primitives with real UVs and normals: lathes (surfaces of revolution), boxes and prisms.

Every category in the synthetic world is a composition of these.  They are written here rather
than taken from `trimesh.creation` because a pattern texture needs UVs that trimesh's primitives
do not carry: each primitive lays its UVs out in tile units (one unit = `UV_TILE_M` metres), so a
pattern has the same scale on every part, and closed loops are rounded to whole tiles with the
seam column duplicated (as `orbitforge.builtin.uv_sphere` does), so no triangle's UVs wrap.

Normals are analytic (smooth round a lathe, split at the profile's sharp corners; flat on box
and prism faces), so rims and caps shade crisply and a seam never shows in the shading.
Conventions: world +Y up, metres, front +Z, counter-clockwise triangles seen from outside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

UV_TILE_M = 0.25
"""Metres per texture tile: a 1 m object shows four tiles of pattern from top to bottom."""


@dataclass(frozen=True)
class Shape:
    """Geometry of one primitive or of several merged ones.

    Attributes:
        vertices: (V, 3) float64, metres, +Y up.
        faces: (F, 3) int64 counter-clockwise seen from outside.
        uvs: (V, 2) float64 in tiles (v up); the texture repeats every 1.0.
        normals: (V, 3) float64 unit vectors.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    normals: np.ndarray

    def transformed(self, matrix: np.ndarray) -> "Shape":
        """Apply a 4x4 affine transform; normals go through the inverse transpose."""
        matrix = np.asarray(matrix, dtype=np.float64)
        linear = matrix[:3, :3]
        vertices = self.vertices @ linear.T + matrix[:3, 3]
        normals = self.normals @ np.linalg.inv(linear)
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        faces = self.faces if np.linalg.det(linear) > 0 else self.faces[:, ::-1]  # a mirror flips winding
        return Shape(vertices, np.ascontiguousarray(faces), self.uvs, normals)

    def moved(self, x: float = 0.0, y: float = 0.0, z: float = 0.0) -> "Shape":
        return Shape(self.vertices + np.array([x, y, z]), self.faces, self.uvs, self.normals)

    def rotated(self, axis: str, degrees: float) -> "Shape":
        """Rotate about the world x, y or z axis through the origin (right-handed)."""
        c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
        i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
        matrix = np.eye(4)
        matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
        return self.transformed(matrix)

    def scaled(self, x: float, y: float | None = None, z: float | None = None) -> "Shape":
        """Scale about the origin; UVs are kept, so a non-uniform scale stretches the pattern."""
        return self.transformed(np.diag([x, x if y is None else y, x if z is None else z, 1.0]))


def merge(shapes: Sequence[Shape]) -> Shape:
    """One Shape holding all of `shapes` (a part made of several primitives: legs, hoops)."""
    offsets = np.cumsum([0] + [len(s.vertices) for s in shapes[:-1]])
    return Shape(
        np.concatenate([s.vertices for s in shapes]),
        np.concatenate([s.faces + o for s, o in zip(shapes, offsets)]),
        np.concatenate([s.uvs for s in shapes]),
        np.concatenate([s.normals for s in shapes]),
    )


# ----------------------------------------------------------------------------- lathe


def lathe(profile: Sequence[tuple[float, float]], segments: int = 48, *, crease_deg: float = 40.0,
          closed: bool = False, sweep_deg: float = 360.0) -> Shape:
    """Revolve a profile of (radius, y) points about the +Y axis.

    The profile runs with the solid on its left (e.g. up the outside of a wall, down the inside),
    which makes the triangles face outwards.  Corners sharper than `crease_deg` get split
    vertices so rims and cap edges shade hard.  `closed` joins the last point to the first
    (a torus's circle).  u runs round the axis (theta = 0 at +Z, the front, increasing towards
    +X), v along the profile; flat rings (caps, table tops) are projected from above instead, so a
    checker stays square there.  `sweep_deg` < 360 revolves only part way (a mug's handle, a chest's lid).
    """
    points = np.asarray(profile, dtype=np.float64)
    keep = np.r_[True, np.linalg.norm(np.diff(points, axis=0), axis=1) > 1e-9]
    points = points[keep]  # a repeated point would make a zero-length segment with no normal
    if closed:
        points = np.vstack([points, points[:1]])
    runs = _split_at_creases(points, crease_deg, closed)
    r_max = max(float(points[:, 0].max()), 1e-6)
    sweep = np.radians(sweep_deg)
    u_tiles = max(1, round(sweep * r_max / UV_TILE_M))  # whole tiles round, so the seam matches
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    v_scale = 1.0 / UV_TILE_M
    if closed:  # the profile loop also closes in v: whole tiles along it
        v_scale = max(1, round(arc[-1] / UV_TILE_M)) / max(arc[-1], 1e-12)
    shapes = []
    for (a, b), normals2d in runs:
        run = _revolve_run(points[a:b], normals2d, arc[a:b] * v_scale, segments, u_tiles, sweep)
        if np.ptp(points[a:b, 1]) < 1e-9:  # a flat disc or ring (a cap, a table top): project from above
            run = Shape(run.vertices, run.faces, run.vertices[:, [0, 2]] / UV_TILE_M, run.normals)
        shapes.append(run)
    return merge(shapes)


def _split_at_creases(points: np.ndarray, crease_deg: float, closed: bool):
    """[((start, stop), normals2d [n, 2]), ...]: runs of the profile that shade smoothly."""
    seg = np.diff(points, axis=0)
    seg_len = np.linalg.norm(seg, axis=1)
    tangents = seg / np.maximum(seg_len, 1e-12)[:, None]  # [P-1, 2]
    n_seg = len(tangents)
    # a corner k sits between segment k-1 and k; closed profiles also have one at the start
    turn = [np.degrees(np.arccos(np.clip(tangents[k - 1] @ tangents[k], -1, 1))) for k in range(1, n_seg)]
    cuts = [k for k, angle in zip(range(1, n_seg), turn) if angle > crease_deg]
    start_smooth = closed and np.degrees(np.arccos(np.clip(tangents[-1] @ tangents[0], -1, 1))) <= crease_deg
    bounds = [0] + cuts + [n_seg]
    runs = []
    for a, b in zip(bounds[:-1], bounds[1:]):  # segments a..b-1, points a..b
        t_pts = np.empty((b - a + 1, 2))
        for i, k in enumerate(range(a, b + 1)):
            before = tangents[k - 1] if k > a else (tangents[-1] if start_smooth and k == 0 else None)
            after = tangents[k] if k < b else (tangents[0] if start_smooth and k == n_seg else None)
            both = [t for t in (before, after) if t is not None]
            t_pts[i] = np.sum(both, axis=0)
        t_pts /= np.maximum(np.linalg.norm(t_pts, axis=1, keepdims=True), 1e-12)
        normals2d = np.stack([t_pts[:, 1], -t_pts[:, 0]], axis=1)  # solid on the left: outward is right
        runs.append(((a, b + 1), normals2d))
    return runs


def _revolve_run(points: np.ndarray, normals2d: np.ndarray, v: np.ndarray, segments: int, u_tiles: int,
                 sweep: float) -> Shape:
    """A grid of len(points) rings x (segments + 1) columns; for a full turn the last column
    duplicates the first, with u = u_tiles instead of 0."""
    theta = np.linspace(0.0, sweep, segments + 1)
    sin, cos = np.sin(theta)[None, :], np.cos(theta)[None, :]
    r, y = points[:, :1], points[:, 1:2]
    vertices = np.stack([r * sin, np.broadcast_to(y, (len(points), segments + 1)), r * cos], axis=-1)
    nr, ny = normals2d[:, :1], normals2d[:, 1:2]
    normals = np.stack([nr * sin, np.broadcast_to(ny, vertices.shape[:2]), nr * cos], axis=-1)
    u = theta / sweep * u_tiles
    uvs = np.stack(np.broadcast_arrays(u[None, :], v[:, None]), axis=-1)
    idx = np.arange(vertices.shape[0] * vertices.shape[1]).reshape(vertices.shape[:2])
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    faces = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    vertices = vertices.reshape(-1, 3)
    return Shape(vertices, _drop_degenerate(vertices, faces), uvs.reshape(-1, 2), normals.reshape(-1, 3))


def _drop_degenerate(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Faces with (near) zero area, such as the ones a profile point on the axis makes."""
    tri = vertices[faces]
    area2 = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    return faces[area2 > 1e-12]


def cylinder(radius: float, height: float, segments: int = 48, *, top: bool = True, bottom: bool = True) -> Shape:
    """A capped cylinder standing on y = 0."""
    return frustum(radius, radius, height, segments, top=top, bottom=bottom)


def frustum(r_bottom: float, r_top: float, height: float, segments: int = 48, *, top: bool = True,
            bottom: bool = True) -> Shape:
    """A truncated cone standing on y = 0 (r_top = 0 gives a cone)."""
    profile = ([(0.0, 0.0)] if bottom else []) + [(r_bottom, 0.0), (r_top, height)]
    if top and r_top > 0:
        profile.append((0.0, height))
    return lathe(profile, segments)


def ellipsoid(radius: float, height: float, segments: int = 48, rings: int = 24) -> Shape:
    """A sphere of `radius` stretched to `height` along y, centred on the origin."""
    t = np.linspace(-np.pi / 2, np.pi / 2, rings + 1)
    return lathe([(radius * np.cos(a), height / 2 * np.sin(a)) for a in t], segments, crease_deg=89.0)


def sphere(radius: float, segments: int = 48, rings: int = 24) -> Shape:
    """A sphere centred on the origin."""
    return ellipsoid(radius, 2 * radius, segments, rings)


def dome(radius: float, height: float, segments: int = 48, rings: int = 12, *, bottom: bool = True) -> Shape:
    """The upper half of an ellipsoid standing on y = 0 (a mushroom cap, a hill of snow)."""
    t = np.linspace(0.0, np.pi / 2, rings + 1)
    profile = ([(0.0, 0.0)] if bottom else []) + [(radius * np.cos(a), height * np.sin(a)) for a in t]
    return lathe(profile, segments)


def capsule(radius: float, length: float, segments: int = 32, rings: int = 8) -> Shape:
    """A capsule along +Y from y = 0 to y = length (hemispheres included)."""
    t = np.linspace(-np.pi / 2, 0.0, rings + 1)
    lower = [(radius * np.cos(a), radius + radius * np.sin(a)) for a in t]
    upper = [(r, length - y) for r, y in reversed(lower)]
    return lathe(lower + upper, segments, crease_deg=89.0)


def torus(major_radius: float, minor_radius: float, segments: int = 48, sides: int = 16, *,
          sweep_deg: float = 360.0) -> Shape:
    """A ring round the +Y axis in the y = 0 plane; `sweep_deg` < 360 leaves an arc from +Z towards +X."""
    t = np.linspace(-np.pi, np.pi, sides, endpoint=False)
    circle = [(major_radius + minor_radius * np.cos(a), minor_radius * np.sin(a)) for a in t]
    return lathe(circle, segments, crease_deg=89.0, closed=True, sweep_deg=sweep_deg)


def rod(start: Sequence[float], end: Sequence[float], radius: float, segments: int = 16) -> Shape:
    """A capped cylinder from point `start` to point `end` (legs, arms, spokes, an antenna)."""
    start, end = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
    axis = end - start
    length = float(np.linalg.norm(axis))
    shape = cylinder(radius, length, segments)
    return shape.transformed(_align_y_to(axis / length)).moved(*start)


def _align_y_to(direction: np.ndarray) -> np.ndarray:
    """4x4 rotation taking +Y to the unit vector `direction` (Rodrigues' formula)."""
    y = np.array([0.0, 1.0, 0.0])
    v = np.cross(y, direction)
    c = float(y @ direction)
    matrix = np.eye(4)
    if np.linalg.norm(v) < 1e-12:
        matrix[:3, :3] = np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
        return matrix
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    matrix[:3, :3] = np.eye(3) + vx + vx @ vx / (1 + c)
    return matrix


# ----------------------------------------------------------------------------- flat-faced


def box(width: float, height: float, depth: float) -> Shape:
    """An axis-aligned box standing on y = 0, centred on x and z, 4 vertices per face.

    Side faces take u along their horizontal edge and v up, so stripes run level all round;
    top and bottom take u = x, v = z.
    """
    h = np.array([width, height, depth]) / 2
    vertices, normals, uvs, faces = [], [], [], []
    for axis in range(3):
        for sign in (1.0, -1.0):
            n = np.zeros(3)
            n[axis] = sign
            up = np.array([0.0, 0.0, -sign]) if axis == 1 else np.array([0.0, 1.0, 0.0])
            right = np.cross(up, n)  # right x up = n: counter-clockwise seen from outside
            base = len(vertices)
            for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                p = h * (n + a * right + b * up)
                vertices.append(p)
                uvs.append((p @ right, p @ up))
                normals.append(n)
            faces += [(base, base + 1, base + 2), (base, base + 2, base + 3)]
    shape = Shape(np.array(vertices), np.array(faces), np.array(uvs) / UV_TILE_M, np.array(normals))
    return shape.moved(y=height / 2)


def prism(polygon: Sequence[tuple[float, float]], depth: float) -> Shape:
    """Extrude a convex (x, y) polygon along z from -depth/2 to +depth/2 (either winding).

    For profiles that are not round: a house's gable roof, a rocket's fins, a blade's bevel.
    """
    poly = np.asarray(polygon, dtype=np.float64)
    x, y = poly[:, 0], poly[:, 1]
    if np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)) < 0:  # clockwise given: make it counter-clockwise
        poly = poly[::-1]
    m = len(poly)
    vertices, normals, uvs, faces = [], [], [], []

    def quad(corners, normal, corner_uvs):
        base = len(vertices)
        vertices.extend(corners)
        normals.extend([normal] * 4)
        uvs.extend(corner_uvs)
        faces.extend([(base, base + 1, base + 2), (base, base + 2, base + 3)])

    z0, z1 = -depth / 2, depth / 2
    run = 0.0
    for k in range(m):  # side walls: u along the outline, v along z
        p, q = poly[k], poly[(k + 1) % m]
        edge = np.linalg.norm(q - p)
        outward = np.array([q[1] - p[1], p[0] - q[0], 0.0]) / max(edge, 1e-12)
        quad([(p[0], p[1], z1), (p[0], p[1], z0), (q[0], q[1], z0), (q[0], q[1], z1)], outward,
             [(run, z1), (run, z0), (run + edge, z0), (run + edge, z1)])
        run += edge
    for z, sign in ((z1, 1.0), (z0, -1.0)):  # caps: a fan over the convex outline
        base = len(vertices)
        for x, y in poly:
            vertices.append((x, y, z))
            normals.append((0.0, 0.0, sign))
            uvs.append((x, y))
        fan = [(base, base + k, base + k + 1) for k in range(1, m - 1)]
        faces.extend(fan if sign > 0 else [f[::-1] for f in fan])
    return Shape(np.array(vertices), np.array(faces), np.array(uvs) / UV_TILE_M, np.array(normals))


def pyramid(width: float, depth: float, height: float) -> Shape:
    """A four-sided pyramid standing on y = 0, base centred on x and z (a roof, a lantern's cap)."""
    w, d = width / 2, depth / 2
    base = [(-w, 0.0, d), (w, 0.0, d), (w, 0.0, -d), (-w, 0.0, -d)]  # counter-clockwise seen from above
    apex = np.array([0.0, height, 0.0])
    vertices, normals, uvs, faces = [], [], [], []
    for k in range(4):
        p, q = np.array(base[k]), np.array(base[(k + 1) % 4])
        n = np.cross(q - p, apex - p)
        n /= np.linalg.norm(n)
        edge = np.linalg.norm(q - p)
        slant = np.linalg.norm(apex - (p + q) / 2)
        start = len(vertices)
        vertices += [p, q, apex]
        normals += [n] * 3
        uvs += [(0.0, 0.0), (edge, 0.0), (edge / 2, slant)]
        faces.append((start, start + 1, start + 2))
    start = len(vertices)
    vertices += [np.array(c) for c in base]
    normals += [np.array([0.0, -1.0, 0.0])] * 4
    uvs += [(x, z) for x, _, z in base]
    faces += [(start, start + 2, start + 1), (start, start + 3, start + 2)]
    return Shape(np.array(vertices), np.array(faces), np.array(uvs) / UV_TILE_M, np.array(normals))


def smooth_profile(heights: Sequence[float], radii: Sequence[float], samples: int = 24) -> list[tuple[float, float]]:
    """(radius, y) points of a smooth curve through control points (lathe outlines: vases, bottles).

    A monotone cubic (PCHIP) never overshoots between control points, so a radius stays positive
    and a neck never bulges past its shoulders.
    """
    from scipy.interpolate import PchipInterpolator

    ys = np.linspace(heights[0], heights[-1], samples)
    rs = PchipInterpolator(heights, radii)(ys)
    return [(float(r), float(y)) for r, y in zip(rs, ys)]
