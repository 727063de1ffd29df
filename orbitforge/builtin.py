"""Built-in assets made in code, so the demo and benchmarks need no data files.

* "globe": a UV sphere of exactly 10,000 triangles with a procedural 512x256 texture; the
  renderer benchmark's standard textured mesh.
* "toy": a checker-textured crate, a vertex-coloured ball and a cone on top; exercises
  several parts, textures and vertex colours at once.
"""

from __future__ import annotations

import numpy as np
import trimesh

from orbitforge.errors import InputError
from orbitforge.mesh import MeshAsset

NAMES = ("globe", "toy")


def uv_sphere(rows: int = 50, cols: int = 100, radius: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A latitude-longitude sphere with a duplicated seam column, so UVs never wrap.

    Returns vertices (V, 3), faces (2 * rows * cols, 3) and uvs (V, 2) (v up).
    """
    theta = np.linspace(0, np.pi, rows + 1)  # from the north pole down
    phi = np.linspace(0, 2 * np.pi, cols + 1)
    th, ph = np.meshgrid(theta, phi, indexing="ij")
    verts = radius * np.stack([np.sin(th) * np.sin(ph), np.cos(th), np.sin(th) * np.cos(ph)], axis=-1)
    uvs = np.stack([ph / (2 * np.pi), 1 - th / np.pi], axis=-1)
    idx = np.arange((rows + 1) * (cols + 1)).reshape(rows + 1, cols + 1)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return verts.reshape(-1, 3), faces, uvs.reshape(-1, 2)


def _globe_texture(width: int = 512, height: int = 256) -> np.ndarray:
    """Oceans, continents from a few fixed sinusoids, ice caps and a graticule."""
    v, u = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    lon, lat = u * 2 * np.pi, (0.5 - v) * np.pi
    land = np.sin(3 * lon + 1.0) * np.cos(2 * lat) + 0.6 * np.sin(5 * lon - 2 * lat + 0.5) + 0.4 * np.cos(7 * lat + lon)
    img = np.empty((height, width, 3), np.uint8)
    img[...] = (30, 80, 170)
    img[land > 0.55] = (60, 150, 70)
    img[land > 1.15] = (150, 120, 70)
    img[np.abs(lat) > 1.25] = (235, 240, 245)
    grid = (np.abs(((u * 12) % 1) - 0.5) > 0.485) | (np.abs(((v * 6) % 1) - 0.5) > 0.47)
    img[grid] = (230, 210, 60)
    return img


def _checker_texture(size: int = 256, cells: int = 4) -> np.ndarray:
    ij = (np.arange(size) * cells // size)
    check = (ij[:, None] + ij[None, :]) % 2 == 0
    img = np.where(check[..., None], np.array([205, 90, 40], np.uint8), np.array([245, 225, 180], np.uint8))
    border = np.minimum.outer(np.minimum(np.arange(size), size - 1 - np.arange(size)), np.minimum(np.arange(size), size - 1 - np.arange(size))) < size // 24
    img[border] = (90, 55, 30)
    return img.astype(np.uint8)


def _crate(size: float) -> MeshAsset:
    """A cube with its own 0-1 UV square on each face (24 vertices), so a texture tiles cleanly."""
    h = size / 2
    verts, uvs, faces = [], [], []
    for axis in range(3):
        for sign in (1.0, -1.0):
            n = np.zeros(3)
            n[axis] = sign
            u = np.zeros(3)
            u[(axis + 1) % 3] = 1.0
            v = np.cross(n, u)  # u x v = n: corners below wind counter-clockwise seen from outside
            base = len(verts)
            for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                verts.append(h * (n + a * u + b * v))
                uvs.append(((a + 1) / 2, (b + 1) / 2))
            faces += [(base, base + 1, base + 2), (base, base + 2, base + 3)]
    return MeshAsset(np.array(verts), np.array(faces), uvs=np.array(uvs), base_colour=_checker_texture(), name="crate")


def load(name: str) -> tuple[MeshAsset, ...]:
    """A built-in asset by name (see NAMES), standing on y = 0, about 1 unit tall."""
    if name == "globe":
        verts, faces, uvs = uv_sphere()
        verts = verts * 0.5 + np.array([0, 0.5, 0])
        return (MeshAsset(verts, faces, normals=(verts - [0, 0.5, 0]) / 0.5, uvs=uvs, base_colour=_globe_texture(), name="globe"),)
    if name == "toy":
        crate = _crate(0.6)
        crate = crate.with_vertices(crate.vertices + np.array([0, 0.3, 0], np.float32))
        ball = trimesh.creation.icosphere(subdivisions=3, radius=0.22)
        ball.apply_translation([0, 0.82, 0])
        hue = (ball.vertices[:, 1] - ball.vertices[:, 1].min()) / np.ptp(ball.vertices[:, 1])
        colours = np.stack([40 + 200 * hue, 120 + 60 * (1 - hue), 220 - 160 * hue, np.full_like(hue, 255)], -1)
        cone = trimesh.creation.cone(radius=0.12, height=0.3, sections=48)
        cone.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, [1, 0, 0]))
        cone.apply_translation([0, 1.0, 0])
        return (
            crate,
            MeshAsset(ball.vertices, ball.faces, vertex_colours=colours, name="ball"),
            MeshAsset(cone.vertices, cone.faces, base_colour_factor=(0.95, 0.8, 0.15, 1.0), name="cone"),
        )
    raise InputError(f"unknown built-in asset {name!r}; choose one of {', '.join(NAMES)}")
